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
from datetime import datetime, timedelta

from redis import Redis
from redis.client import Pipeline
from rq import Queue, Retry
from twilio.base.exceptions import TwilioRestException

from ivr.calllog import LOOK_AFTER_S, UNFINISHED_KEY, make_event
from ivr.formvalues import whole_seconds
from ivr.menus.flow import TERMINAL_STATUSES, call_ended_in
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


# KEYS: the unfinished calls. ARGV: now, when to look again, batch size. Claims the calls whose
# time has come by moving their time on, so each is settled by one job at a time (a job that
# fails is retried by RQ, and looked at again after LOOK_AFTER_S whatever happened to it).
_CLAIM_UNFINISHED = """
local calls = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, sid in ipairs(calls) do redis.call('ZADD', KEYS[1], 'XX', ARGV[2], sid) end
return calls
"""
# Every retry within LOOK_AFTER_S (7.5 min in all), so the next look never overlaps a chain.
SETTLE_RETRY = Retry(max=3, interval=[30, 120, 300])
# Twilio ends every call within 24 hours: past this a call still without an end is not asked about.
GIVE_UP_AFTER_S = 26 * 3600


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


def dispatch_unfinished(redis: Redis, queue: Queue, now: float | None = None, batch: int = 500) -> int:
    """Queue a settle job for every call started over LOOK_AFTER_S ago whose final status has not
    come (or not since it was last looked at); returns how many were queued."""
    now = time.time() if now is None else now
    claimed = redis.eval(_CLAIM_UNFINISHED, 1, UNFINISHED_KEY, now, now + LOOK_AFTER_S, batch)
    if not claimed:
        return 0
    jobs = [
        Queue.prepare_data(settle_unfinished, (sid.decode(),), retry=SETTLE_RETRY, timeout=60, result_ttl=0)
        for sid in claimed
    ]
    queue.enqueue_many(jobs)
    return len(claimed)


def settle_unfinished(call_sid: str) -> str:
    """A call with no final status long after it started: ask Twilio how it stands. Its ticket
    so far is written first, whatever Twilio answers. Ended, its end goes on the ticket as if the
    status callback had come; still live, it is looked at again later; unknown to Twilio (a
    simulated call, another account), refused for good (credentials, a closed account), without
    REST credentials or still without an end a day on, the ticket stays as it stands and the call
    is looked at no more. Other Twilio errors (5xx, rate limits, the network) propagate: RQ
    retries them, and the call is looked at again anyway."""
    hotline = services()
    calls = hotline.calls
    events = calls.events(call_sid)
    if any(e["kind"] == "status" and e.get("status") in TERMINAL_STATUSES for e in events):
        hotline.redis.zrem(UNFINISHED_KEY, call_sid)  # it ended meanwhile; its own sync ran
        return "ended"
    if not events:  # its story is gone (expired, or a Redis that lost its data): nothing to write
        hotline.redis.zrem(UNFINISHED_KEY, call_sid)
        return "gone"
    sync_ticket(call_sid)
    if not hotline.twilio_configured():
        return _as_it_stands(call_sid, "no Twilio credentials to ask")
    times = [datetime.fromisoformat(e["at"]) for e in events]
    if (hotline.clock() - min(times)).total_seconds() > GIVE_UP_AFTER_S:
        return _as_it_stands(call_sid, "still no end a day after it started")
    try:
        found = hotline.twilio().calls(call_sid).fetch()
    except TwilioRestException as exc:
        if exc.status == 404:
            return _as_it_stands(call_sid, "unknown to Twilio")
        if exc.status and 400 <= exc.status < 500 and exc.status != 429:
            # Asking again will not help (our credentials, our account): say so, loudly, once.
            log.error("call %s: Twilio refused the look-up of its end (%s, %s)", call_sid, exc.status, exc.code)
            return _as_it_stands(call_sid, f"Twilio answered {exc.status}")
        raise
    if found.status not in TERMINAL_STATUSES:
        return "live"  # a long call: its ticket shows it in progress meanwhile
    event = make_event(
        "status",
        _ended_at(found, max(times)),
        event_id=f"status-{found.status}-rest",
        status=found.status,
        duration_s=whole_seconds(found.duration) if found.duration else None,
        **_numbers(found),
        via="twilio_rest",  # the story says where the end came from
    )
    now_ms = int(hotline.clock().timestamp() * 1000)

    def ended(pipe: Pipeline) -> None:
        # What the status webhook does: the call's end, and its ticket due.
        call_ended_in(pipe, hotline.routing, calls, call_sid, now_ms)
        mark_due(pipe, call_sid)

    calls.append(call_sid, [event], also=ended)
    log.info("call %s: no final status came; Twilio says %s", call_sid, found.status)
    return found.status


def _ended_at(found, last_event_at: datetime) -> datetime:  # noqa: ANN001 - a Twilio CallInstance
    """When the call ended: Twilio's end time; without one (Twilio leaves it empty for a call
    that did not complete), its start plus its duration; else the call's last event."""
    if found.end_time:
        return found.end_time
    if found.start_time and found.duration:
        return found.start_time + timedelta(seconds=whole_seconds(found.duration))
    return last_event_at


def _numbers(found) -> dict:  # noqa: ANN001 - a Twilio CallInstance
    """The numbers as tickets see them: for a call we placed (a callback), the customer is `to`."""
    outbound = (found.direction or "").startswith("outbound")
    caller, called = (found.to, found._from) if outbound else (found._from, found.to)
    return {"caller": caller or None, "called": called or None}


def _as_it_stands(call_sid: str, why: str) -> str:
    """The ticket (written already) stays as it is; the call is looked at no more."""
    services().redis.zrem(UNFINISHED_KEY, call_sid)
    log.info("call %s: no final status came (%s); ticket written as it stands", call_sid, why)
    return "as it stands"


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
