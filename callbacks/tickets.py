"""Ticket writing through RQ. Jobs take ids and let exceptions propagate so RQ retries them.

Webhooks don't create RQ jobs (that costs a dozen Redis commands and Python work per job, too
much for a webhook's budget). They mark the call's ticket as due with one ZADD in the pipeline
they already send; the worker's dispatcher turns due calls into `sync_ticket` jobs every second.
A call marked again while being dispatched stays due, so a late event (a Record action after
`completed`) always gets its own sync.
"""

from __future__ import annotations

import logging
import time

from redis import Redis
from redis.client import Pipeline
from rq import Queue, Retry

from ivr.services import services

log = logging.getLogger(__name__)

DUE_KEY = "hotline:tickets:due"
# A database outage of up to about an hour is ridden out; after that the job sits in RQ's failed
# registry, and the events stay in Redis for CALL_LOG_TTL_S (`flask hotline resync` replays them).
SYNC_RETRY = Retry(max=10, interval=[2, 5, 15, 30, 60, 120, 300, 600, 900, 1800])

# KEYS: the due set. ARGV: member, score pairs as read. Removes a member only if nobody marked it
# again since it was read.
_REMOVE_UNCHANGED = """
local removed = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"""


def mark_due(pipeline: Pipeline, call_sid: str) -> None:
    """Add 'this call's ticket needs a sync' to a webhook's pipeline (one command)."""
    pipeline.zadd(DUE_KEY, {call_sid: time.time()})


def enqueue_sync(queue: Queue, call_sid: str, pipeline: Pipeline | None = None) -> None:
    job = Queue.prepare_data(sync_ticket, (call_sid,), retry=SYNC_RETRY, timeout=60, result_ttl=0)
    queue.enqueue_many([job], pipeline=pipeline)


def dispatch_due(redis: Redis, queue: Queue, batch: int = 500) -> int:
    """Queue a sync job for every call marked due; returns how many were queued."""
    due = redis.zrange(DUE_KEY, 0, batch - 1, withscores=True)
    if not due:
        return 0
    with redis.pipeline() as pipe:
        for member, _score in due:
            enqueue_sync(queue, member.decode(), pipe)
        pipe.execute()
    # Only after the jobs are safely queued: a crash in between queues a sync twice, harmlessly.
    args = [value for member, score in due for value in (member, repr(score))]
    redis.eval(_REMOVE_UNCHANGED, 1, DUE_KEY, *args)
    return len(due)


def seed_reference_floor() -> None:
    """Keep Redis's reference sequence above every stored ticket id, and its callback ids above
    those on tickets. Run where a process starts next to the database (worker, migrations, local
    commands) and by a sync that met a taken reference, so a Redis that lost its data hands out
    fresh references and callback ids, not ones callers and ops already hold."""
    hotline = services()
    hotline.calls.raise_reference_floor(hotline.store.max_reference())
    hotline.callbacks.raise_id_floor(hotline.store.max_callback_id())


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
