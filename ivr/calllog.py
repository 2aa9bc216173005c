"""Per-call event log in Redis: the hot path's only write.

Each webhook appends its events to `call:{CallSid}:events` in one pipelined round trip; an RQ
job later folds them into the ticket (see `ivr.tickets.store`). Keys of one call share the
`{CallSid}` hash tag so they stay on one Redis Cluster slot. The ticket reference is allocated
when the call starts, so a caller can be told it before any database write happens.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from redis import Redis
from redis.client import Pipeline

from ivr.roundtrip import RoundTrip

SEQUENCE_KEY = "hotline:ticket_seq"
# Calls that started and have not ended, scored by when to look at them (epoch seconds): a call
# whose final status callback never comes (our server down or deploying at that moment, a
# number configured without it) would otherwise never become a ticket. The final status takes
# the call out; the worker's dispatcher settles the rest (`callbacks.tickets.settle_unfinished`).
UNFINISHED_KEY = "hotline:calls:unfinished"
# Most calls end well within this; Twilio is asked about the others, again at this interval.
LOOK_AFTER_S = 15 * 60
# References start at six digits so every one is read back the same way.
FIRST_REFERENCE = 100000

# KEYS: call hash, events list, sequence, unfinished calls. ARGV: start event JSON, ttl, first
# reference, when to look at the call if it has not ended. Idempotent: a retried
# /voice/incoming keeps the reference it got the first time (and its time to be looked at).
_START_CALL = """
local ref = redis.call('HGET', KEYS[1], 'ref')
if not ref then
  if redis.call('EXISTS', KEYS[3]) == 0 then redis.call('SET', KEYS[3], tonumber(ARGV[3]) - 1) end
  ref = redis.call('INCR', KEYS[3])
  redis.call('HSET', KEYS[1], 'ref', ref)
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[4], 'NX', ARGV[4], ARGV[5])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return ref
"""

# KEYS: sequence. ARGV: floor. Keeps the sequence above references already in the ticket store
# (after Redis lost its data, say), so a reference is never handed out twice.
RAISE_FLOOR = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if current < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""


def call_key(call_sid: str) -> str:
    return f"call:{{{call_sid}}}"


def events_key(call_sid: str) -> str:
    return f"call:{{{call_sid}}}:events"


def utc_iso(moment: datetime) -> str:
    """A time as tickets store it: ISO 8601 in UTC, whatever zone it was computed in."""
    return moment.astimezone(UTC).isoformat()


def make_event(kind: str, at: datetime, event_id: str | None = None, **data: object) -> dict:
    """An event as stored. `event_id` makes it count once however often it is logged (the same
    news from two places); without one, it gets its id as it is appended (`identified`)."""
    event = {"at": at.isoformat(), "kind": kind, **data}
    return {"id": event_id, **event} if event_id else event


class RetryNames:
    """Names for one webhook's appends, from Twilio's I-Twilio-Idempotency-Token (which a retry
    of the webhook repeats): token:append, so no two appends of one webhook name events alike,
    and a retry names its events as the first try did. Without a token, None (random ids)."""

    def __init__(self, token: str | None):
        self.token = token or None
        self.appends = 0

    def next(self) -> str | None:
        if self.token is None:
            return None
        self.appends += 1
        return f"{self.token}:{self.appends}"


def identified(events: Iterable[dict], retry_token: str | None = None) -> list[dict]:
    """The events, each with an id. One without gets, when its webhook carried Twilio's
    I-Twilio-Idempotency-Token, an id made of the token, its place and its kind — Twilio's retry
    of a webhook carries the same token, so a retried menu input is on the path once — and
    otherwise a random one."""
    out = []
    for place, event in enumerate(events):
        if "id" not in event:
            event_id = f"{retry_token}:{place}:{event['kind']}" if retry_token else uuid.uuid4().hex
            event = {"id": event_id, **event}
        out.append(event)
    return out


class CallLog:
    def __init__(self, redis: Redis, ttl_s: int, roundtrip: RoundTrip | None = None):
        self.redis = redis
        self.ttl_s = ttl_s
        self.roundtrip = roundtrip or RoundTrip(redis)
        self._start = redis.register_script(_START_CALL)
        self._floor = redis.register_script(RAISE_FLOOR)

    def start(self, call_sid: str, event: dict) -> int:
        """Record the call's first event and return its ticket reference (one round trip)."""
        return int(self._start(keys=self._start_keys(call_sid), args=self._start_args(call_sid, event)))

    def _start_keys(self, call_sid: str) -> list[str]:
        return [call_key(call_sid), events_key(call_sid), SEQUENCE_KEY, UNFINISHED_KEY]

    def _start_args(self, call_sid: str, event: dict) -> list:
        # Real time, as the dispatcher reads the set by it (an injected clock may be anywhere).
        return [json.dumps(identified([event])[0]), self.ttl_s, FIRST_REFERENCE, time.time() + LOOK_AFTER_S, call_sid]

    def start_with(
        self, call_sid: str, event: dict, also: Callable[[Pipeline], None] | None = None
    ) -> tuple[int, list]:
        """`start`, plus the commands of `also` in the same round trip; returns the reference
        and their results."""
        if also is None:
            return self.start(call_sid, event), []
        keys = self._start_keys(call_sid)
        pipe = self.roundtrip.pipeline()
        # EVAL, not the registered script: a pipeline would first ask SCRIPT EXISTS (a round trip).
        pipe.eval(_START_CALL, len(keys), *keys, *self._start_args(call_sid, event))
        also(pipe)
        results = self.roundtrip.execute(pipe)
        return int(results[0]), results[1:]

    def append(
        self,
        call_sid: str,
        events: Iterable[dict],
        with_reference: bool = False,
        also: Callable[[Pipeline], None] | None = None,
        retry_token: str | None = None,
    ) -> int | None:
        """Append events, optionally read the reference and add more commands (`also`, e.g.
        queueing the ticket job), all in one pipelined round trip. `retry_token`: the webhook's
        idempotency token, which names the events that have no id (see `identified`)."""
        payload = [json.dumps(e) for e in identified(events, retry_token)]
        pipe = self.roundtrip.pipeline()
        if payload:
            # The TTL was set when the call started and is renewed by every ticket sync.
            pipe.rpush(events_key(call_sid), *payload)
        if also is not None:
            also(pipe)
        if with_reference:
            pipe.hget(call_key(call_sid), "ref")
        results = self.roundtrip.execute(pipe)
        if with_reference and results[-1] is not None:
            return int(results[-1])
        return None

    @staticmethod
    def ended_in(pipe: Pipeline, call_sid: str) -> None:
        """Add 'this call has ended' (its final status is logged) to a pipeline."""
        pipe.zrem(UNFINISHED_KEY, call_sid)

    def append_many(self, events_by_call: dict[str, list[dict]]) -> None:
        """Events for several calls in one pipelined round trip (a line moved by the router)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for call_sid, events in events_by_call.items():
                pipe.rpush(events_key(call_sid), *(json.dumps(e) for e in identified(events)))
            pipe.execute()

    def reference(self, call_sid: str) -> int | None:
        ref = self.redis.hget(call_key(call_sid), "ref")
        return int(ref) if ref is not None else None

    def events(self, call_sid: str) -> list[dict]:
        """The call's events; also renews their TTL (a key created by a late append has none)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.lrange(events_key(call_sid), 0, -1)
        pipe.expire(events_key(call_sid), self.ttl_s)
        pipe.expire(call_key(call_sid), self.ttl_s)
        raw_events = pipe.execute()[0]
        return [json.loads(raw) for raw in raw_events]

    def raise_reference_floor(self, floor: int) -> None:
        self._floor(keys=[SEQUENCE_KEY], args=[floor])

    def allocate_reference(self) -> int:
        """A fresh reference, for the rare ticket whose reference was already taken."""
        self.redis.set(SEQUENCE_KEY, FIRST_REFERENCE - 1, nx=True)
        return int(self.redis.incr(SEQUENCE_KEY))
