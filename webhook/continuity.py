"""The background half of alert continuity: a thread per worker that, while its worker holds
the check's lease (one owner across every worker), looks for overdue heartbeats every
``TVGW_CONTINUITY_CHECK_S`` and tells each gap it records (notification and metric). Gaps found
on arrival are told from the webhook's answer instead (:mod:`webhook.events`)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from engine.continuity import Continuity, Notice
from webhook.notify import Notifier

__all__ = ["start_continuity_watch", "tell"]

log = logging.getLogger("tvgw.continuity")

#: The lease outlives a few missed runs of its holder before another worker takes over.
LEASE_RUNS = 3
MIN_LEASE_S = 10.0


def tell(notices: list[Notice], notifier: Notifier) -> None:
    """Count and send the gaps one run recorded."""
    from webhook.metrics import observe_gaps

    facts = [n.to_dict() for n in notices]
    observe_gaps(facts)
    notifier.gaps(facts)
    for notice in notices:
        log.warning("%s", notice.text)


def start_continuity_watch(continuity: Continuity, notifier: Notifier, interval_s: float) -> threading.Thread:
    """Start this worker's watcher thread (a daemon: it dies with the worker, and the lease
    then passes to another worker's)."""
    owner = f"{socket.gethostname()}:{os.getpid()}"
    ttl = max(LEASE_RUNS * interval_s, MIN_LEASE_S)

    def loop() -> None:
        while True:
            time.sleep(interval_s)
            try:
                notices = continuity.check_if_owner(owner, ttl)
                if notices:
                    tell(notices, notifier)
            except Exception:
                log.exception("overdue-heartbeat check failed; retrying in %.1f s", interval_s)

    thread = threading.Thread(target=loop, name="tvgw-continuity", daemon=True)
    thread.start()
    return thread
