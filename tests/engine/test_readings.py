"""Cached exchange readings (engine.brokers.readings): fresh readings are reused, a stale one is
refreshed by one thread while callers take the older one after a short wait, and a failing read
backs off instead of being asked again by every caller. A settable clock drives ages and
back-off; fetches block on events, never on the machine's speed."""

from __future__ import annotations

import threading

import pytest

from engine.brokers.readings import ReadCache, Reading, ReadPolicy
from engine.exceptions import ExchangeUnavailableError, TemporaryError
from tests.conftest import wait_until

POLICY = ReadPolicy(fresh_s=5.0, max_age_s=60.0, wait_s=0.05, backoff_s=1.0, max_backoff_s=8.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Source:
    """A read that counts its calls, returns the next value, fails while ``failing`` is set,
    and (when ``gate`` is given) waits for it before answering."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.calls = 0
        self.value = 0.0
        self.failing = False
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self) -> Reading[float]:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        if self.failing:
            raise TemporaryError("exchange says 503")
        self.value += 1
        return Reading(self.value, self.clock(), "source")


@pytest.fixture
def setup() -> tuple[ReadCache, Source, Clock]:
    clock = Clock()
    cache = ReadCache("test", POLICY, clock=clock)
    return cache, Source(clock), clock


def test_a_fresh_reading_is_reused_and_an_old_one_read_again(setup: tuple[ReadCache, Source, Clock]) -> None:
    cache, source, clock = setup
    assert cache.get("k", source).value == 1
    clock.now += 4.9
    assert cache.get("k", source).value == 1 and source.calls == 1
    clock.now += 0.2
    reading = cache.get("k", source)
    assert reading.value == 2 and source.calls == 2 and reading.age(clock.now) == 0


def test_a_stale_reading_serves_while_its_refresh_is_slow(setup: tuple[ReadCache, Source, Clock]) -> None:
    cache, source, clock = setup
    cache.get("k", source)
    clock.now += 30  # stale, still younger than max_age
    source.gate = threading.Event()
    old = cache.get("k", source)  # waits wait_s for the held refresh, then takes the old one
    assert old.value == 1 and old.age(clock.now) == 30
    assert cache.get("k", source).value == 1 and source.calls == 2  # one refresh at a time
    source.gate.set()
    wait_until(lambda: (cache.peek("k") or Reading(0.0, 0, "")).value == 2, 10, "the refresh landed")
    assert cache.get("k", source).value == 2 and source.calls == 2


def test_a_failing_read_backs_off_instead_of_being_asked_by_every_caller(
    setup: tuple[ReadCache, Source, Clock],
) -> None:
    cache, source, clock = setup
    source.failing = True
    with pytest.raises(TemporaryError, match="503"):
        cache.get("k", source)
    for _ in range(5):  # within the back-off: nobody asks the exchange
        with pytest.raises(ExchangeUnavailableError, match="back-off"):
            cache.get("k", source)
    assert source.calls == 1
    clock.now += 1.0
    with pytest.raises(TemporaryError):
        cache.get("k", source)
    assert source.calls == 2
    clock.now += 1.0  # the second failure doubled the back-off to 2 s
    with pytest.raises(ExchangeUnavailableError, match="back-off"):
        cache.get("k", source)
    assert source.calls == 2
    clock.now += 1.0
    source.failing = False
    assert cache.get("k", source).value == 1 and source.calls == 3


def test_a_failed_refresh_keeps_serving_the_last_reading_until_it_is_too_old(
    setup: tuple[ReadCache, Source, Clock],
) -> None:
    cache, source, clock = setup
    cache.get("k", source)
    source.failing = True
    clock.now += 10
    for _ in range(3):
        assert cache.get("k", source).value == 1  # the refresh failed: the last reading serves
        wait_until(lambda: cache._slots["k"].running is None, 10, "the failed refresh ended")
    assert source.calls == 2  # one refresh failed; the others fell in its back-off
    clock.now += 51  # now 61 s old: beyond max_age, and the read still fails
    with pytest.raises(TemporaryError, match="503"):
        cache.get("k", source)


def test_callers_without_a_reading_share_one_read(setup: tuple[ReadCache, Source, Clock]) -> None:
    cache, source, _ = setup
    source.gate = threading.Event()
    results: list[float] = []

    def read() -> None:
        results.append(cache.get("k", source).value)

    threads = [threading.Thread(target=read) for _ in range(6)]
    for thread in threads:
        thread.start()
    assert source.entered.wait(10)
    source.gate.set()
    for thread in threads:
        thread.join(10)
    assert results == [1.0] * 6 and source.calls == 1
