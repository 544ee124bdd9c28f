"""The background half of alert continuity: the overdue-heartbeat check, run every
``TVGW_CONTINUITY_CHECK_S`` by the one worker (of every host) that holds its lease
(:func:`storage.leases.start_owned_job`, as the pruner and the outcome resolver are), telling each
gap it records (notification and metric). Gaps found on arrival are told from the webhook's
answer instead (:mod:`webhook.events`)."""

from __future__ import annotations

import logging
import threading

from engine.continuity import OVERDUE_LEASE, Continuity, Notice
from storage.leases import start_owned_job
from webhook.notify import Notifier

__all__ = ["start_continuity_watch", "tell"]

log = logging.getLogger("tvgw.continuity")


def tell(notices: list[Notice], notifier: Notifier) -> None:
    """Count and send the gaps one run recorded."""
    from webhook.metrics import observe_gaps

    facts = [n.to_dict() for n in notices]
    observe_gaps(facts)
    notifier.gaps(facts)
    for notice in notices:
        log.warning("%s", notice.text)


def start_continuity_watch(
    continuity: Continuity,
    notifier: Notifier,
    interval_s: float,
    *,
    owner: str | None = None,
    stop: threading.Event | None = None,
    ttl_s: float | None = None,
) -> threading.Thread:
    """Start this worker's watcher thread (a daemon: it dies with the worker, and the lease then
    passes to another worker's). Each gap is recorded once whoever finds it (a UNIQUE key); the
    lease only spares the other workers the reading. ``owner``, ``stop`` and ``ttl_s`` as
    :func:`~storage.leases.start_owned_job` takes them."""

    def run() -> None:
        notices = continuity.check_overdue()
        if notices:
            tell(notices, notifier)

    return start_owned_job(
        continuity.storage, OVERDUE_LEASE, interval_s, run, owner=owner, stop=stop, ttl_s=ttl_s
    )
