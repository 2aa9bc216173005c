"""RQ jobs that write tickets. Jobs take ids and let exceptions propagate so RQ retries them."""

from __future__ import annotations

from rq import Queue, Retry

from ivr.services import services

# A database outage of up to about an hour is ridden out; after that the job sits in RQ's failed
# registry, and the events stay in Redis for CALL_LOG_TTL_S (`flask hotline resync` replays them).
SYNC_RETRY = Retry(max=10, interval=[2, 5, 15, 30, 60, 120, 300, 600, 900, 1800])


def enqueue_sync(queue: Queue, call_sid: str) -> None:
    queue.enqueue(sync_ticket, call_sid, retry=SYNC_RETRY, job_timeout=60, result_ttl=0)


def seed_reference_floor() -> None:
    """Keep Redis's reference sequence above every stored ticket id. Run where a process starts
    next to the database (worker, migrations, local commands) and by every sync, so a Redis that
    lost its data hands out fresh references, not ones callers already hold."""
    hotline = services()
    hotline.calls.raise_reference_floor(hotline.store.max_reference())


def sync_ticket(call_sid: str) -> int:
    """Fold the call's events from Redis into its ticket; returns the ticket id."""
    hotline = services()
    calls = hotline.calls

    def fresh_reference() -> int:
        seed_reference_floor()
        return calls.allocate_reference()

    ticket = hotline.store.sync(
        call_sid, calls.events(call_sid), calls.reference(call_sid), fresh_reference, hotline.clock()
    )
    calls.raise_reference_floor(ticket.id)
    return ticket.id
