"""Callbacks in Redis: a callback is a seat in the same line as live callers.

A pending callback is the member `cb:<id>` of its (queue, language) line, scored by the caller's
original arrival, so it is served in arrival order together with live callers, counts in
everyone's position and wait estimate, and is matched with agents by the same atomic script.
Its record (`{routing}:cb:<id>`) holds the number, where it waits, its status and the outbox of
dial attempts; `{routing}:cb-by-number` keeps one open callback per number.

Statuses: pending (in line), scheduled (waiting for a time: the next opening, a retry),
dialling (an agent is reserved, the call is being placed or is ringing), done, failed,
cancelled. Every key shares the `{routing}` hash tag with the lines (Redis Cluster).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from redis import Redis, WatchError
from redis.client import Pipeline

from ivr.calllog import RAISE_FLOOR
from ivr.queues.state import TAG, Seat, caller_key, seat_in, waiting_key, wake_in

STATUSES = ("pending", "scheduled", "dialling", "done", "failed", "cancelled")
OPEN = ("pending", "scheduled", "dialling")
BY_NUMBER = f"{TAG}:cb-by-number"  # E.164 number -> id of its open callback
BY_CALLER = f"{TAG}:cb-by-caller"  # the asking caller's number, when the callback goes elsewhere
INDEX = f"{TAG}:cb-index"  # id -> requested ms (every callback, for ops; trimmed by age)
OPEN_INDEX = f"{TAG}:cb-open"  # id -> requested ms, open callbacks only
SCHEDULED = f"{TAG}:cb-scheduled"  # id -> ms it is due back in line (the sweep's safety net)
DIALLING = f"{TAG}:cb-dialling"  # id -> ms an agentless attempt's dial began (the sweep's net for lost dials)
SEQUENCE = f"{TAG}:cb-seq"
# Every call sid a callback attempt placed -> ms recorded: a redial's look-up in Twilio's call
# list must never adopt a call that belongs to another attempt (agent first, the agent gets a
# call per callback). Kept for a day; a look-up only asks about the last minutes.
PLACED = f"{TAG}:cb-placed"
PLACED_KEEP_MS = 24 * 3600 * 1000
# Closed callbacks stay visible to ops this long; the ticket keeps them for good.
CLOSED_TTL_S = 14 * 24 * 3600
_PAGE = 1000  # index entries read per round trip when listing
DRAFT_TTL_S = 1800
# Twilio refused a dial for our account's sake (credentials, a suspended account): no callback is
# dialled for this long (each would fail the same way and use up the customer's attempts), then
# the next dial tries again.
DIAL_PAUSE = f"{TAG}:cb-dial-paused"
DIAL_PAUSE_S = 300


def member(callback_id: str) -> str:
    return f"cb:{callback_id}"


def callback_id_of(member_id: str) -> str | None:
    return member_id[3:] if member_id.startswith("cb:") else None


def record_key(callback_id: str) -> str:
    return f"{TAG}:cb:{callback_id}"


def draft_key(call_sid: str) -> str:
    return f"{TAG}:cb-draft:{call_sid}"


def dial_lock_key(callback_id: str, attempt: int) -> str:
    return f"{TAG}:cb-dial:{callback_id}:{attempt}"


@dataclass
class Callback:
    id: str
    status: str
    number: str
    call_sid: str  # the call that asked for it; its ticket tells the callback's story
    lang: str
    queue: str
    node: str
    branch: str
    arrived_ms: int  # the place in line it keeps
    requested_ms: int
    scheduled_ms: int | None = None
    agent: str | None = None
    reference: int | None = None
    reason: str | None = None
    updated_ms: int = 0
    attempts: list[dict] = field(default_factory=list)
    caller: str = ""  # the number that asked (the callback may go to another)
    also_calls: list[str] = field(default_factory=list)  # later calls that asked for it again
    sms_sent_ms: int | None = None  # when the text after the last failed attempt went out

    @property
    def calls(self) -> list[str]:
        """Every call that asked for this callback: each one's ticket tells its story."""
        return [self.call_sid, *self.also_calls]

    @property
    def attempt(self) -> dict | None:
        return self.attempts[-1] if self.attempts else None

    def dialling(self, n: int) -> bool:
        """Whether attempt n is the one under way (a late webhook of an older one is not)."""
        return self.status == "dialling" and self.attempt is not None and self.attempt["n"] == n

    def awaits_dial(self, n: int) -> bool:
        """Whether attempt n is under way with neither a call nor a result yet."""
        return self.dialling(n) and not self.attempt.get("call_sid") and not self.attempt.get("result")

    def seat(self) -> Seat:
        return Seat(member(self.id), self.queue, self.lang, self.arrived_ms, self.node, self.branch)

    def as_mapping(self) -> dict[str, str]:
        data = asdict(self)
        data["attempts"] = json.dumps(self.attempts)
        data["also_calls"] = json.dumps(self.also_calls)
        return {k: "" if v is None else str(v) for k, v in data.items()}

    @classmethod
    def from_mapping(cls, raw: dict[bytes, bytes]) -> Callback:
        data = {k.decode(): v.decode() for k, v in raw.items()}

        def opt_int(name: str) -> int | None:
            return int(data[name]) if data.get(name) else None

        return cls(
            id=data["id"],
            status=data["status"],
            number=data["number"],
            call_sid=data["call_sid"],
            lang=data["lang"],
            queue=data["queue"],
            node=data.get("node", ""),
            branch=data.get("branch", "other"),
            arrived_ms=int(data["arrived_ms"]),
            requested_ms=int(data["requested_ms"]),
            scheduled_ms=opt_int("scheduled_ms"),
            agent=data.get("agent") or None,
            reference=opt_int("reference"),
            reason=data.get("reason") or None,
            updated_ms=int(data.get("updated_ms") or 0),
            attempts=json.loads(data.get("attempts") or "[]"),
            caller=data.get("caller", ""),
            also_calls=json.loads(data.get("also_calls") or "[]"),
            sms_sent_ms=opt_int("sms_sent_ms"),
        )


# KEYS: BY_NUMBER, SEQUENCE. ARGV: number. The open callback of a number, or a fresh id (the
# index entry is claimed in the same step, so two requests for one number get one id).
_CLAIM = """
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then return {existing, '0'} end
local id = tostring(redis.call('INCR', KEYS[2]))
redis.call('HSET', KEYS[1], ARGV[1], id)
return {id, '1'}
"""


_DROP_IF_OURS = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0
"""


class CallbackBook:
    def __init__(self, redis: Redis):
        self.redis = redis
        self._claim = redis.register_script(_CLAIM)
        self._floor = redis.register_script(RAISE_FLOOR)

    def raise_id_floor(self, floor: int) -> None:
        """Keep fresh ids above `floor` (the tickets' highest): a Redis that lost its data must
        not hand out an id that tickets, and ops, already know as another callback."""
        self._floor(keys=[SEQUENCE], args=[floor])

    # ----- drafts: a caller choosing a number -----------------------------------------------

    def save_draft(self, call_sid: str, fields: dict[str, object]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(draft_key(call_sid), mapping={k: str(v) for k, v in fields.items()})
        pipe.expire(draft_key(call_sid), DRAFT_TTL_S)
        pipe.execute()

    def draft(self, call_sid: str) -> dict[str, str] | None:
        raw = self.redis.hgetall(draft_key(call_sid))
        return {k.decode(): v.decode() for k, v in raw.items()} or None

    def drop_draft(self, call_sid: str) -> None:
        self.redis.delete(draft_key(call_sid))

    # ----- requests ---------------------------------------------------------------------

    def request(self, fresh: Callback) -> tuple[Callback, bool]:
        """Book a callback, or update the number's open one (one per number). Returns the
        callback and whether it is new. A new pending callback takes its seat in line here."""
        raw_id, created = self._claim(keys=[BY_NUMBER, SEQUENCE], args=[fresh.number])
        callback_id = raw_id.decode()
        if created == b"1":
            fresh.id = callback_id
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(record_key(callback_id), mapping=fresh.as_mapping())
            pipe.zadd(INDEX, {callback_id: fresh.requested_ms})
            pipe.zadd(OPEN_INDEX, {callback_id: fresh.requested_ms})
            if fresh.status == "pending":
                self._seat_in(pipe, fresh)
            if fresh.status == "scheduled" and fresh.scheduled_ms:
                pipe.zadd(SCHEDULED, {callback_id: fresh.scheduled_ms})
            if fresh.caller and fresh.caller != fresh.number:
                pipe.hset(BY_CALLER, fresh.caller, callback_id)
            pipe.execute()
            return fresh, True

        moved: dict[str, str] = {}

        def refresh(current: Callback) -> Callback | None:
            if current.status not in OPEN:
                return None  # it closed since the claim (cancelled, say): book a new one below
            # Asked again: the same seat (the earlier arrival) and this call's ticket follows the
            # callback too. Unless it is being dialled right now, it takes the newest reason, and
            # with it the newest line (in that line by its original arrival): the agent who calls
            # back is one for what the customer wants now.
            if current.status != "dialling" and fresh.queue:
                moved.update(queue=current.queue, lang=current.lang)
                current.queue, current.lang = fresh.queue, fresh.lang or current.lang
                current.node, current.branch = fresh.node or current.node, fresh.branch or current.branch
            current.updated_ms = fresh.requested_ms
            if fresh.call_sid not in current.calls:
                current.also_calls.append(fresh.call_sid)
            return current

        def follow(pipe: Pipeline, current: Callback) -> None:
            if moved and (moved["queue"], moved["lang"]) != (current.queue, current.lang):
                pipe.zrem(waiting_key(moved["queue"], moved["lang"]), member(current.id))
            if fresh.caller and fresh.caller != current.number:
                # This caller hears about it when they phone again, like the first asker.
                pipe.hset(BY_CALLER, fresh.caller, current.id)

        updated = self.update(callback_id, refresh, also=follow)
        if updated is None or updated.status not in OPEN:
            # The index pointed at a record that expired or closed meanwhile: start again (only
            # if the index still points there: a newer request may already own the number).
            self.redis.eval(_DROP_IF_OURS, 1, BY_NUMBER, fresh.number, callback_id)
            return self.request(fresh)
        return updated, False

    def _seat_in(self, pipe, callback: Callback) -> None:  # noqa: ANN001 - a redis pipeline
        seat_in(pipe, callback.seat())
        wake_in(pipe)

    # ----- reads ------------------------------------------------------------------------

    def get(self, callback_id: str) -> Callback | None:
        raw = self.redis.hgetall(record_key(callback_id))
        return Callback.from_mapping(raw) if raw else None

    def open_for(self, number: str) -> Callback | None:
        """The open callback to this number, or else one this number asked for elsewhere."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(BY_NUMBER, number)
        pipe.hget(BY_CALLER, number)
        for callback_id in pipe.execute():
            found = self.get(callback_id.decode()) if callback_id else None
            if found and found.status in OPEN:
                return found
        return None

    def position(self, callback: Callback) -> int | None:
        rank = self.redis.zrank(waiting_key(callback.queue, callback.lang), member(callback.id))
        return None if rank is None else rank + 1

    def listing(
        self, status: str | None = None, queue: str | None = None, limit: int = 100, now_ms: int | None = None
    ) -> list[Callback]:
        """Newest first, filtered (open ones from their own index), up to `limit`: the index is
        read a page at a time until enough match, however many there are. Closed callbacks
        whose record expired drop out of the index."""
        if now_ms is not None:
            # Not by age alone: a callback asked for long ago may still be open, or have closed
            # yesterday (its record lives 14 days from then). Old entries whose record is gone.
            self._trim_index(now_ms - CLOSED_TTL_S * 1000)
        index = OPEN_INDEX if status in OPEN else INDEX
        found: list[Callback] = []
        start = 0
        while len(found) < limit:
            ids = [i.decode() for i in self.redis.zrevrange(index, start, start + _PAGE - 1)]
            if not ids:
                break
            start += len(ids)
            pipe = self.redis.pipeline(transaction=False)
            for callback_id in ids:
                pipe.hgetall(record_key(callback_id))
            gone = []
            for callback_id, raw in zip(ids, pipe.execute(), strict=True):
                if not raw:
                    gone.append(callback_id)
                    continue
                callback = Callback.from_mapping(raw)
                if (status is None or callback.status == status) and (queue is None or callback.queue == queue):
                    found.append(callback)
            if gone:
                self.redis.zrem(index, *gone)
                start -= len(gone)  # the page shifted by what was removed
        return found[:limit]

    def _trim_index(self, before_ms: int) -> None:
        """Drop the ops index's entries requested before `before_ms` whose record has expired."""
        old = [i.decode() for i in self.redis.zrangebyscore(INDEX, "-inf", before_ms, start=0, num=_PAGE)]
        if not old:
            return
        with self.redis.pipeline(transaction=False) as pipe:
            for callback_id in old:
                pipe.exists(record_key(callback_id))
            gone = [callback_id for callback_id, there in zip(old, pipe.execute(), strict=True) if not there]
        if gone:
            self.redis.zrem(INDEX, *gone)

    def open_counts(self) -> dict[tuple[str, str], int]:
        """(queue, status) -> how many open callbacks, over all of them (two fields each)."""
        counts: dict[tuple[str, str], int] = {}
        start = 0
        while ids := self.redis.zrange(OPEN_INDEX, start, start + _PAGE - 1):
            start += len(ids)
            pipe = self.redis.pipeline(transaction=False)
            for callback_id in ids:
                pipe.hmget(record_key(callback_id.decode()), "queue", "status")
            for queue, status in pipe.execute():
                if queue is not None and status is not None:
                    key = (queue.decode(), status.decode())
                    counts[key] = counts.get(key, 0) + 1
        return counts

    def note_placed_in(self, pipe: Pipeline, call_sid: str, now_ms: int) -> None:
        """Add 'this call belongs to a callback attempt' to a transaction."""
        pipe.zadd(PLACED, {call_sid: now_ms})
        pipe.zremrangebyscore(PLACED, "-inf", now_ms - PLACED_KEEP_MS)

    def placed_since(self, since_ms: int) -> set[str]:
        """Call sids recorded on callback attempts since `since_ms`, any callback, any status."""
        return {sid.decode() for sid in self.redis.zrangebyscore(PLACED, since_ms, "+inf")}

    def reseat(self, callback_id: str) -> Callback | None:
        """A pending callback whose seat left the line without an attempt (its dispatcher died
        between the match and the reservation's record): back in line at its original arrival."""
        return self.update(callback_id, lambda cb: cb if cb.status == "pending" else None)

    def overdue(self, before_ms: int, limit: int = 100) -> list[str]:
        """Scheduled callbacks due back in line before `before_ms` (their job was lost)."""
        return [i.decode() for i in self.redis.zrangebyscore(SCHEDULED, "-inf", before_ms, start=0, num=limit)]

    def pause_dialling(self, why: str, seconds: int = DIAL_PAUSE_S) -> None:
        self.redis.set(DIAL_PAUSE, why, ex=seconds)

    def dial_watch(self, lost_before_ms: int, limit: int = 100) -> tuple[bool, list[str]]:
        """For the routing pass, in one round trip: whether dialling is paused, and the agentless
        dials begun before `lost_before_ms` that are still dialling (the sweep's candidates)."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(DIAL_PAUSE)
            pipe.zrangebyscore(DIALLING, "-inf", lost_before_ms, start=0, num=limit)
            paused, lost = pipe.execute()
        return bool(paused), [i.decode() for i in lost]

    def dialling_paused(self) -> tuple[str, int] | None:
        """(why, seconds left) while dialling is paused, else None."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(DIAL_PAUSE)
            pipe.ttl(DIAL_PAUSE)
            why, ttl = pipe.execute()
        return (why.decode(), max(int(ttl), 0)) if why is not None else None

    def index_dialling(self) -> int:
        """Put open callbacks dialling without an agent into the sweep's index (records from
        before there was one); how many were added. Run as a worker starts."""
        added, start = 0, 0
        while ids := self.redis.zrange(OPEN_INDEX, start, start + _PAGE - 1):
            start += len(ids)
            with self.redis.pipeline(transaction=False) as pipe:
                for raw_id in ids:
                    pipe.hmget(record_key(raw_id.decode()), "status", "agent", "updated_ms", "attempts")
                rows = pipe.execute()
            found = {
                raw_id.decode(): int(updated or 0)
                for raw_id, (status, agent, updated, attempts) in zip(ids, rows, strict=True)
                if status == b"dialling"
                and not agent
                and (json.loads(attempts or b"[{}]") or [{}])[-1].get("dial_started_at")
            }
            if found:
                added += self.redis.zadd(DIALLING, found, nx=True)
        return added

    def unindex_unless_dialling(self, callback_id: str) -> None:
        """Drop the sweep's index entry of a callback not dialling without an agent (checked in
        Redis, so one that starts dialling meanwhile keeps its entry)."""
        script = (
            "local status = redis.call('HGET', KEYS[1], 'status') "
            "local agent = redis.call('HGET', KEYS[1], 'agent') "
            "if status ~= 'dialling' or (agent and agent ~= '') then redis.call('ZREM', KEYS[2], ARGV[1]) end "
            "return 0"
        )
        self.redis.eval(script, 2, record_key(callback_id), DIALLING, callback_id)

    # ----- changes ----------------------------------------------------------------------

    def update(
        self,
        callback_id: str,
        change: Callable[[Callback], Callback | None],
        also: Callable[[Pipeline, Callback], None] | None = None,
    ) -> Callback | None:
        """Read, change, write under WATCH: a compare-and-set, so a status webhook and a job
        racing on one callback never overwrite each other. `change` returns None to leave it;
        `also` adds commands (a job to queue, say) to the same transaction as the write."""
        key = record_key(callback_id)
        with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.hgetall(key)
                    if not raw:
                        pipe.unwatch()
                        return None
                    current = Callback.from_mapping(raw)
                    changed = change(current)
                    if changed is None:
                        pipe.unwatch()
                        return current
                    pipe.multi()
                    pipe.hset(key, mapping=changed.as_mapping())
                    self._follow_status(pipe, changed)
                    if also is not None:
                        also(pipe, changed)
                    pipe.execute()
                    return changed
                except WatchError:
                    continue

    def _follow_status(self, pipe, callback: Callback) -> None:  # noqa: ANN001
        """Keep the line, the number index and the record's life in step with the status."""
        seat = callback.seat()
        if callback.status != "pending":
            pipe.zrem(waiting_key(seat.queue, seat.lang), seat.call_sid)
        if callback.status in ("pending",):
            self._seat_in(pipe, callback)
        if callback.status == "scheduled" and callback.scheduled_ms:
            pipe.zadd(SCHEDULED, {callback.id: callback.scheduled_ms})
        else:
            pipe.zrem(SCHEDULED, callback.id)
        started = (callback.attempt or {}).get("dial_started_at")
        if callback.status == "dialling" and not callback.agent and started:
            # No agent gate (a gated attempt's reservation has its own sweep), and its dial has
            # begun: one waiting for a pacing slot or in a backlog of dial jobs is not lost. NX:
            # the dial's start, not its latest outbox entry.
            pipe.zadd(DIALLING, {callback.id: callback.updated_ms}, nx=True)
        else:
            pipe.zrem(DIALLING, callback.id)
        if callback.status not in OPEN:
            pipe.zrem(OPEN_INDEX, callback.id)
            # Only if they still point here: a newer request for the number may own them.
            pipe.eval(_DROP_IF_OURS, 1, BY_NUMBER, callback.number, callback.id)
            if callback.caller:
                pipe.eval(_DROP_IF_OURS, 1, BY_CALLER, callback.caller, callback.id)
            pipe.delete(caller_key(seat.call_sid))
            pipe.expire(record_key(callback.id), CLOSED_TTL_S)
        elif callback.status == "scheduled":
            pipe.delete(caller_key(seat.call_sid))

    def mark_sms_sent(self, callback_id: str, now_ms: int) -> None:
        """The failure text went out (one field of a closed record: no status change follows)."""
        script = (
            "if redis.call('EXISTS', KEYS[1]) == 1 and (redis.call('HGET', KEYS[1], 'sms_sent_ms') or '') == '' "
            "then redis.call('HSET', KEYS[1], 'sms_sent_ms', ARGV[1]) end return 0"
        )
        self.redis.eval(script, 1, record_key(callback_id), now_ms)

    def claim_failure_text(self, callback_id: str, token: str) -> bool:
        """Whether this run may send the failure text: the first to ask, or the same job run
        again (its work-horse died); a second job for the same callback never texts twice."""
        key = f"{TAG}:cb-sms:{callback_id}"
        if self.redis.set(key, token, nx=True, ex=CLOSED_TTL_S):
            return True
        return self.redis.get(key) == token.encode()

    def failure_text_began(self, callback_id: str, now_ms: int) -> int | None:
        """The failure text's outbox: None for the run that sends it first (its start is noted
        now), else the ms an earlier run began sending, which may have reached Twilio."""
        script = (
            "local began = redis.call('GET', KEYS[1]) if began then return began end "
            "redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return false"
        )
        began = self.redis.eval(script, 1, f"{TAG}:cb-sms-began:{callback_id}", now_ms, CLOSED_TTL_S)
        return int(began) if began is not None else None

    def failure_text_refused(self, callback_id: str) -> None:
        """Twilio refused the text (it sent nothing): a later run need not look for it."""
        self.redis.delete(f"{TAG}:cb-sms-began:{callback_id}")

    def dial_lock(self, callback_id: str, attempt: int, token: str, ttl_s: int) -> bool:
        """One job at a time may dial an attempt (a second run waits for the first's outcome). A
        lock already held under `token` is taken again: the same job's earlier run died holding it."""
        script = (
            "local held = redis.call('GET', KEYS[1]) if held and held ~= ARGV[1] then return 0 end "
            "redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) return 1"
        )
        return bool(self.redis.eval(script, 1, dial_lock_key(callback_id, attempt), token, ttl_s))

    def release_dial_lock(self, callback_id: str, attempt: int, token: str) -> None:
        script = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
        self.redis.eval(script, 1, dial_lock_key(callback_id, attempt), token)
