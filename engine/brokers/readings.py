"""Exchange reads that may be stale (a ticker, the account's equity), each kept with the time it
was taken, refreshed by one thread at a time, and backed off when the exchange fails.

Why: a read on an alert's path that waits on a slow exchange makes the alert wait, and every
alert that asks a failing exchange again adds its own timeout (one symbol's ticker answering
after 10 s held every other symbol's alerts for 5 s; a failing balance read was retried by
every alert and failed them all). Here:

* a reading younger than ``fresh_s`` is used as it is;
* an older one is refreshed, once per key however many callers ask at the same moment; a
  caller waits at most ``wait_s`` for the refresh and otherwise takes the older reading, as long
  as that is younger than ``max_age_s`` (the refresh goes on in the background);
* a failed refresh is not tried again before a back-off has passed (doubling from ``backoff_s``
  up to ``max_backoff_s``); callers meanwhile get the last good reading while it is younger than
  ``max_age_s``, and after that the failure itself, saying when the exchange is asked again.

Every :class:`Reading` carries the time it was taken, so a decision shows how old the price or
the equity it was made with is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from engine.exceptions import BrokerError, ExchangeUnavailableError

__all__ = ["ReadCache", "ReadPolicy", "Reading"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Reading(Generic[T]):
    """A value read from a broker, when it was read (epoch seconds) and from where."""

    value: T
    taken_at: float
    source: str

    def age(self, now: float | None = None) -> float:
        """Seconds since the reading was taken (never negative)."""
        return max(0.0, (time.time() if now is None else now) - self.taken_at)


@dataclass(frozen=True)
class ReadPolicy:
    """How old a reading may be, how long a caller waits for a fresher one, and how a failing
    read backs off (see the module docstring)."""

    fresh_s: float = 5.0
    max_age_s: float = 60.0
    wait_s: float = 0.3
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0


@dataclass
class _Slot:
    """One key's state, guarded by the cache's lock."""

    reading: Reading[Any] | None = None
    running: Future[Reading[Any]] | None = None
    failures: int = 0
    retry_at: float = 0.0  # the clock's time before which a failed read is not asked again
    error: BrokerError | None = None
    asked: int = field(default=0)  # reads actually sent (for the log and the tests)


class ReadCache:
    """Readings per key for one broker, refreshed as :class:`ReadPolicy` says.

    A refresh that a caller must have (no usable reading) runs in the caller's thread; one that
    only keeps a usable reading fresh runs on this cache's small thread pool, so the caller can
    stop waiting for it after ``wait_s``. ``clock`` (epoch seconds) judges ages and back-off; the
    readings' ``taken_at`` must come from the same clock."""

    def __init__(
        self, name: str, policy: ReadPolicy, *, threads: int = 4, clock: Callable[[], float] = time.time
    ):
        self.name = name
        self.policy = policy
        self.clock = clock
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=f"tvgw-reads-{name}")

    def get(self, key: str, fetch: Callable[[], Reading[T]], *, wait_s: float | None = None) -> Reading[T]:
        """The reading of ``key``: the cached one while fresh, else a refreshed one (``fetch``
        is called at most once at a time per key), else a usable older one. Raises the read's
        :class:`BrokerError` when no reading younger than ``max_age_s`` exists and the read
        failed (or is backing off after failing). ``wait_s`` overrides the policy's wait."""
        policy = self.policy
        with self._lock:
            slot = self._slots.setdefault(key, _Slot())
            reading = slot.reading
            now = self.clock()
            if reading is not None and reading.age(now) <= policy.fresh_s:
                return reading
            usable = reading if reading is not None and reading.age(now) <= policy.max_age_s else None
            future = slot.running
            start = future is None and now >= slot.retry_at
            if start:
                future = slot.running = Future()
                slot.asked += 1
        if future is None:  # backing off after a failure
            if usable is not None:
                return usable
            raise self._backing_off(key, slot, now)
        if start:
            if usable is None:
                self._refresh(key, slot, fetch, future)  # the caller needs it: its own thread
            else:
                self._pool.submit(self._refresh, key, slot, fetch, future)
        try:
            return future.result(None if usable is None else policy.wait_s if wait_s is None else wait_s)
        except FutureTimeout:
            assert usable is not None
            return usable
        except BrokerError:
            if usable is not None:
                return usable
            raise

    def peek(self, key: str) -> Reading[Any] | None:
        """The last good reading of ``key`` (any age), or None."""
        with self._lock:
            slot = self._slots.get(key)
            return None if slot is None else slot.reading

    def asked(self, key: str) -> int:
        """How many reads of ``key`` were sent to the broker (refreshes, not cache hits)."""
        with self._lock:
            slot = self._slots.get(key)
            return 0 if slot is None else slot.asked

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _refresh(self, key: str, slot: _Slot, fetch: Callable[[], Reading[T]], future: Future[Any]) -> None:
        try:
            reading = fetch()
        except BrokerError as exc:
            with self._lock:
                slot.failures += 1
                delay = min(self.policy.backoff_s * 2 ** (slot.failures - 1), self.policy.max_backoff_s)
                slot.retry_at = self.clock() + delay
                slot.error = exc
                slot.running = None
            log.warning("%s %s failed (%s); asked again in %.1f s", self.name, key, exc, delay)
            future.set_exception(exc)
        except BaseException as exc:  # a bug, not the exchange: no back-off, but never a stuck key
            with self._lock:
                slot.running = None
            future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            with self._lock:
                slot.reading, slot.failures, slot.retry_at, slot.error = reading, 0, 0.0, None
                slot.running = None
            future.set_result(reading)

    def _backing_off(self, key: str, slot: _Slot, now: float) -> BrokerError:
        wait = max(0.0, slot.retry_at - now)
        last = slot.reading
        had = f"; the last reading is {last.age(now):.0f} s old" if last is not None else ""
        error = ExchangeUnavailableError(
            f"{self.name} {key}: {slot.error}; not asked again for {wait:.1f} s (back-off){had}"
        )
        error.__cause__ = slot.error
        return error
