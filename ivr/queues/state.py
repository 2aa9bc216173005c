"""Live routing state in Redis: who waits where and in what order, what each agent is doing, and
the atomic match of waiting callers with available agents.

Twilio's own `<Enqueue>` queues are strictly first-in first-out, so our order lives here: one
sorted set per (queue, language), scored by arrival time, plus each queue's priority from config.
A caller keeps their original arrival score when they go back to the line (an agent did not
answer), so they keep their place. Positions are ZRANKs: O(log n), flat at 100,000 callers.

Every key shares the `{routing}` hash tag, so one Lua script can match callers and agents
atomically even on Redis Cluster: no agent ever gets two callers and no caller two agents,
however many app processes and workers race.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from redis import Redis
from redis.client import Pipeline

from ivr.roundtrip import RoundTrip

TAG = "{routing}"
AGENT_STATUS = f"{TAG}:agent-status"  # agent id -> available | reserved | busy | wrap_up | away | offline
AGENT_SINCE = f"{TAG}:agent-since"  # agent id -> epoch ms of the last status change
AGENT_CALL = f"{TAG}:agent-call"  # agent id -> the call it is reserved for or on
STATUSES = ("available", "reserved", "busy", "wrap_up", "away", "offline")
SETTABLE = ("available", "away", "offline")  # what an agent may set; the rest follow calls


LINES = f"{TAG}:lines"  # every waiting set ever used: how lines a new config dropped are found
SCANNED = f"{TAG}:waiting::"  # a member of LINES once the waiting sets from before it were read in
CONFIGS = f"{TAG}:configs"  # config version -> the lines it serves and when a router last ran it


def waiting_key(queue: str, lang: str) -> str:
    return f"{TAG}:waiting:{queue}:{lang}"


def line_of(key: str) -> tuple[str, str]:
    """(queue, language) of a waiting set's key (queue names and language ids have no ':')."""
    _, _, queue, lang = key.split(":", 3)
    return queue, lang


def caller_key(call_sid: str) -> str:
    return f"{TAG}:caller:{call_sid}"


def gone_key(call_sid: str) -> str:
    return f"{TAG}:gone:{call_sid}"


@dataclass(frozen=True)
class Seat:
    """A caller's place: which line, and the arrival time that orders it."""

    call_sid: str
    queue: str
    lang: str
    arrived_ms: int
    node: str = ""  # the transfer node that queued them (its URLs put them back in line)
    branch: str = ""
    callback: str = ""  # the callback this call answers (the agent's whisper says so)


@dataclass(frozen=True)
class Match:
    agent_id: str
    call_sid: str
    queue: str
    lang: str
    arrived_ms: int


# KEYS[1..3]: AGENT_STATUS, AGENT_SINCE, AGENT_CALL; KEYS[4..]: waiting sets.
# ARGV: now_ms, caller-key prefix, n_agents, "1" if callbacks may be dialled, then per agent: id,
#       n_lines, then per line:
#       key index (into KEYS), priority.
# Available agents are served longest-idle first; each takes the best head of its lines
# (highest priority, then earliest arrival). Returns {agent, call, key index, score, ...}.
_MATCH = """
local now, prefix, n_agents, callbacks_ok = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4] == '1'
-- A line's head, passing over callbacks (members 'cb:<id>') while they may not be dialled
-- (outside business hours): live callers behind them are still served.
local function head(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if callbacks_ok or not first[1] or string.sub(first[1], 1, 3) ~= 'cb:' then return first end
  -- Page on past the callbacks (there may be hundreds at a line's head when dials cannot be
  -- placed for a while), up to 10,000 of them.
  for start = 0, 9800, 200 do
    local window = redis.call('ZRANGE', key, start, start + 199, 'WITHSCORES')
    for j = 1, #window, 2 do
      if string.sub(window[j], 1, 3) ~= 'cb:' then return {window[j], window[j + 1]} end
    end
    if #window < 400 then return {} end
  end
  return {}
end
local agents, i = {}, 5
for a = 1, n_agents do
  local id, n_lines = ARGV[i], tonumber(ARGV[i + 1])
  local lines = {}
  for l = 1, n_lines do
    lines[l] = {tonumber(ARGV[i + 2 * l]), tonumber(ARGV[i + 2 * l + 1])}
  end
  i = i + 2 + 2 * n_lines
  if redis.call('HGET', KEYS[1], id) == 'available' then
    agents[#agents + 1] = {id = id, since = tonumber(redis.call('HGET', KEYS[2], id) or '0'), lines = lines}
  end
end
table.sort(agents, function(x, y) if x.since == y.since then return x.id < y.id end return x.since < y.since end)
local out = {}
for _, agent in ipairs(agents) do
  local best_key, best_member, best_score, best_priority = nil, nil, nil, nil
  for _, line in ipairs(agent.lines) do
    local top = head(KEYS[line[1]])
    if top[1] then
      local score = tonumber(top[2])
      if best_key == nil or line[2] > best_priority or (line[2] == best_priority and score < best_score) then
        best_key, best_member, best_score, best_priority = line[1], top[1], score, line[2]
      end
    end
  end
  if best_key then
    redis.call('ZREM', KEYS[best_key], best_member)
    redis.call('HSET', KEYS[1], agent.id, 'reserved')
    redis.call('HSET', KEYS[2], agent.id, now)
    redis.call('HSET', KEYS[3], agent.id, best_member)
    redis.call('HSET', prefix .. best_member, 'agent', agent.id)
    out[#out + 1] = agent.id
    out[#out + 1] = best_member
    out[#out + 1] = best_key
    out[#out + 1] = tostring(best_score)
  end
end
return out
"""


# KEYS: the caller's hash, AGENT_STATUS, AGENT_CALL. ARGV: key prefix, call sid, "1" if the
# caller hung up. Takes the caller out of their line (if in one) in one step, so a webhook can do
# it inside the pipeline it already sends; a hang-up before an agent took the call is counted
# for the abandonment rate (a caller already talking to an agent is not abandoning).
_LEAVE = """
local seat = redis.call('HMGET', KEYS[1], 'queue', 'lang', 'agent')
if not seat[1] then redis.call('DEL', KEYS[1]) return 0 end
redis.call('ZREM', ARGV[1] .. 'waiting:' .. seat[1] .. ':' .. seat[2], ARGV[2])
local agent_status = seat[3] and redis.call('HGET', KEYS[2], seat[3])
local theirs = seat[3] and redis.call('HGET', KEYS[3], seat[3]) == ARGV[2]
if ARGV[3] == '1' and not (theirs and agent_status == 'busy') then
  redis.call('INCR', ARGV[1] .. 'stats:' .. seat[1] .. ':abandoned')
end
if ARGV[3] == '1' and theirs then
  -- The caller is gone while an agent was reserved for them or talking to them: free the agent
  -- (after wrap-up if they had talked), so no agent waits forever for a call that ended.
  local next_status = agent_status == 'busy' and 'wrap_up' or 'available'
  if agent_status == 'reserved' or agent_status == 'busy' then
    redis.call('HSET', KEYS[2], seat[3], next_status)
    redis.call('HSET', ARGV[1] .. 'agent-since', seat[3], ARGV[4])
    redis.call('HDEL', KEYS[3], seat[3])
    redis.call('LPUSH', ARGV[1] .. 'wake', 1)
  end
end
redis.call('DEL', KEYS[1])
return 1
"""
# KEYS: AGENT_STATUS, AGENT_SINCE, AGENT_CALL, WAKE. ARGV: agent, call, to-status, now ms, "1" to
# keep the call, then the statuses it may move from. A compare-and-set: the agent moves only if
# still on this call in one of those statuses (a late webhook cannot undo a newer reservation).
# The status's time never goes back: a host whose clock is behind (or the simulator's `--at`
# against a running hotline) must not make an agent look idle for hours (longest idle first).
_TRANSITION = """
local status = redis.call('HGET', KEYS[1], ARGV[1])
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
local allowed = false
for i = 6, #ARGV do if status == ARGV[i] then allowed = true end end
if not allowed then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local since = math.max(tonumber(ARGV[4]), tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0'))
redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', since))
if ARGV[5] ~= '1' then redis.call('HDEL', KEYS[3], ARGV[1]) end
if ARGV[3] == 'available' then redis.call('LPUSH', KEYS[4], 1) end
return 1
"""
WAKE_KEY = f"{TAG}:wake"  # pushed when callers or agents change; the dispatcher blocks on it

# KEYS: the old line, LINES. ARGV: caller-hash prefix, callback-record prefix, waiting-set prefix,
# fallback queue, n, then n (node, queue) pairs, then (queue, language) pairs: each queue's
# language for this line's callers. Moves up to 200 members and returns {member, queue, language,
# ...} (empty when the line is, and then it leaves the registry). ZADD NX: someone already in the
# new line keeps their own (earlier) seat.
_REHOME = """
local caller, record, waiting, fallback, n = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local by_node, lang_in = {}, {}
for i = 6, 5 + 2 * n, 2 do by_node[ARGV[i]] = ARGV[i + 1] end
for i = 6 + 2 * n, #ARGV, 2 do lang_in[ARGV[i]] = ARGV[i + 1] end
local members = redis.call('ZRANGE', KEYS[1], 0, 199, 'WITHSCORES')
if #members == 0 then
  redis.call('SREM', KEYS[2], KEYS[1])
  return {}
end
local out = {}
for j = 1, #members, 2 do
  local member, score = members[j], members[j + 1]
  local node = redis.call('HGET', caller .. member, 'node')
  local queue = (node and by_node[node]) or fallback
  local lang = lang_in[queue]
  local line = waiting .. queue .. ':' .. lang
  redis.call('ZADD', line, 'NX', score, member)
  redis.call('SADD', KEYS[2], line)
  redis.call('ZREM', KEYS[1], member)
  if redis.call('EXISTS', caller .. member) == 1 then
    redis.call('HSET', caller .. member, 'queue', queue, 'lang', lang)
  end
  if string.sub(member, 1, 3) == 'cb:' and redis.call('EXISTS', record .. string.sub(member, 4)) == 1 then
    redis.call('HSET', record .. string.sub(member, 4), 'queue', queue, 'lang', lang)
  end
  out[#out + 1] = member
  out[#out + 1] = queue
  out[#out + 1] = lang
end
return out
"""

# KEYS: AGENT_STATUS, AGENT_CALL, the new call's seat hash, AGENT_SINCE. ARGV: agent, old call,
# new call, now ms, then the seat's field/value pairs. A reservation follows its caller to another call (a callback's
# seat becomes the customer's live call when they answer), only if it is still that reservation.
# The reservation's clock restarts: the stale sweep gives the new call a connection's full time.
_HAND_OVER = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'reserved' or redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local since = math.max(tonumber(ARGV[4]), tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0'))
redis.call('HSET', KEYS[4], ARGV[1], string.format('%d', since))
redis.call('HSET', KEYS[3], unpack(ARGV, 5))
return 1
"""

# KEYS: gone marker, waiting set, caller hash, wake list, LINES. ARGV: call, arrival ms, seat fields...
_JOIN = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
redis.call('SADD', KEYS[5], KEYS[2])
redis.call('HSET', KEYS[3], unpack(ARGV, 3))
redis.call('PERSIST', KEYS[3])
redis.call('LPUSH', KEYS[4], 1)
redis.call('LTRIM', KEYS[4], 0, 0)
return 1
"""


def _seat_fields(seat: Seat) -> dict[str, object]:
    return {
        "queue": seat.queue,
        "lang": seat.lang,
        "arrived_ms": seat.arrived_ms,
        "node": seat.node,
        "branch": seat.branch,
        "callback": seat.callback,
    }


def seat_in(pipe: Pipeline, seat: Seat) -> None:
    """Add 'seat this caller in their line (an earlier arrival is kept), reserved for nobody' to
    a pipeline."""
    pipe.zadd(waiting_key(seat.queue, seat.lang), {seat.call_sid: seat.arrived_ms}, nx=True)
    pipe.sadd(LINES, waiting_key(seat.queue, seat.lang))
    pipe.hset(caller_key(seat.call_sid), mapping=_seat_fields(seat))
    pipe.persist(caller_key(seat.call_sid))
    pipe.hdel(caller_key(seat.call_sid), "agent")


def wake_in(pipe: Pipeline) -> None:
    """Add 'wake the dispatcher' to a pipeline."""
    pipe.lpush(WAKE_KEY, 1)
    pipe.ltrim(WAKE_KEY, 0, 0)


class RoutingState:
    def __init__(self, redis: Redis, roundtrip: RoundTrip | None = None):
        self.redis = redis
        # The webhooks' reads and writes go out in one exchange on a kept connection.
        self.roundtrip = roundtrip or RoundTrip(redis)
        self._match = redis.register_script(_MATCH)
        self._transition = redis.register_script(_TRANSITION)
        self._rehome = redis.register_script(_REHOME)

    def join_in(self, pipe: Pipeline, seat: Seat) -> None:
        """Add 'put this caller in line, and wake the dispatcher' to a webhook's pipeline; a caller
        whose call has already ended (its final status overtook this webhook) is not seated."""
        keys = [gone_key(seat.call_sid), waiting_key(seat.queue, seat.lang), caller_key(seat.call_sid), WAKE_KEY, LINES]
        fields = [value for pair in _seat_fields(seat).items() for value in pair]
        pipe.eval(_JOIN, len(keys), *keys, seat.call_sid, seat.arrived_ms, *fields)

    def mark_gone_in(self, pipe: Pipeline, call_sid: str) -> None:
        pipe.set(gone_key(call_sid), 1, ex=24 * 3600)

    def mark_gone(self, call_sid: str) -> None:
        with self.redis.pipeline(transaction=False) as pipe:
            self.mark_gone_in(pipe, call_sid)
            pipe.execute()

    def gone(self, call_sid: str) -> bool:
        """Whether the call's final status has been seen (a webhook overtaken by it is late)."""
        return bool(self.redis.exists(gone_key(call_sid)))

    def leave_in(self, pipe: Pipeline, call_sid: str, hung_up: bool, now_ms: int = 0) -> None:
        """Add 'take this caller out of line, if in one' to a webhook's pipeline; with hung_up,
        also free an agent reserved for or talking to them."""
        keys = [caller_key(call_sid), AGENT_STATUS, AGENT_CALL]
        # EVAL, not a registered script: redis-py checks registered scripts with SCRIPT EXISTS
        # before each pipeline, an extra round trip on the webhook's hot path.
        pipe.eval(_LEAVE, len(keys), *keys, f"{TAG}:", call_sid, "1" if hung_up else "0", now_ms)

    def announce_in(self, pipe: Pipeline, call_sid: str, note: dict) -> None:
        pipe.hset(caller_key(call_sid), "announced", json.dumps(note))

    def announce_before_queue_in(self, pipe: Pipeline, call_sid: str, note: dict) -> None:
        """What a caller heard before joining. They may hang up instead of joining, so the note
        expires (joining makes the seat persistent again)."""
        pipe.hset(caller_key(call_sid), "announced", json.dumps(note))
        pipe.expire(caller_key(call_sid), 24 * 3600)

    def wake_in(self, pipe: Pipeline) -> None:
        wake_in(pipe)

    # ----- callers ------------------------------------------------------------------------

    def join(self, seat: Seat) -> int:
        """Put a caller in line (idempotent: a retried webhook keeps the first arrival); returns
        their 1-based position in their (queue, language) line."""
        pipe = self.redis.pipeline(transaction=True)
        seat_in(pipe, seat)
        pipe.zrank(waiting_key(seat.queue, seat.lang), seat.call_sid)
        return int(pipe.execute()[-1]) + 1

    def back_to_line(self, call_sid: str) -> int | None:
        """An agent did not take the call: the caller goes back with their original arrival time,
        so they keep their place. Returns the position, or None if the caller is unknown."""
        seat = self.seat(call_sid)
        return None if seat is None else self.join(seat)

    def leave(self, call_sid: str) -> Seat | None:
        """Take a caller out of line (answered, hung up, moved on); returns where they were."""
        seat = self.seat(call_sid)
        if seat is None:
            return None
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(waiting_key(seat.queue, seat.lang), call_sid)
        pipe.delete(caller_key(call_sid))
        pipe.execute()
        return seat

    def seat(self, call_sid: str) -> Seat | None:
        data = {k.decode(): v.decode() for k, v in self.redis.hgetall(caller_key(call_sid)).items()}
        if "queue" not in data:
            return None
        return Seat(
            call_sid,
            data["queue"],
            data["lang"],
            int(data["arrived_ms"]),
            data.get("node", ""),
            data.get("branch", ""),
            data.get("callback", ""),
        )

    def position(self, call_sid: str, queue: str, lang: str) -> int | None:
        rank = self.redis.zrank(waiting_key(queue, lang), call_sid)
        return None if rank is None else rank + 1

    def waiting(self, queue: str, langs: Iterable[str]) -> dict[str, tuple[int, int | None]]:
        """Per language: (callers waiting, arrival ms of the longest waiting or None)."""
        langs = list(langs)
        pipe = self.redis.pipeline(transaction=False)
        for lang in langs:
            pipe.zcard(waiting_key(queue, lang))
            pipe.zrange(waiting_key(queue, lang), 0, 0, withscores=True)
        results = pipe.execute()
        out = {}
        for n, lang in enumerate(langs):
            size, head = results[2 * n], results[2 * n + 1]
            out[lang] = (int(size), int(head[0][1]) if head else None)
        return out

    # ----- agents -------------------------------------------------------------------------

    def set_agent_status(self, agent_id: str, status: str, now_ms: int, call_sid: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown agent status {status!r}")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(AGENT_STATUS, agent_id, status)
        pipe.hset(AGENT_SINCE, agent_id, now_ms)
        if call_sid is not None:
            pipe.hset(AGENT_CALL, agent_id, call_sid)
        elif status in ("available", "away", "offline"):
            pipe.hdel(AGENT_CALL, agent_id)
        if status == "available":
            self.wake_in(pipe)
        pipe.execute()

    def transition(
        self, agent_id: str, call_sid: str, from_statuses: Iterable[str], to: str, now_ms: int, keep_call: bool = False
    ) -> bool:
        """Move the agent to `to` only if still on `call_sid` in one of `from_statuses`."""
        keys = [AGENT_STATUS, AGENT_SINCE, AGENT_CALL, WAKE_KEY]
        args = [agent_id, call_sid, to, now_ms, "1" if keep_call else "0", *from_statuses]
        return bool(self._transition(keys=keys, args=args))

    def hand_over(self, agent_id: str, old_call: str, seat: Seat, now_ms: int) -> bool:
        """Move the agent's reservation from `old_call` to the seat's call (which gets the seat,
        out of line, reserved for the agent)."""
        fields = [value for pair in {**_seat_fields(seat), "agent": agent_id}.items() for value in pair]
        keys = [AGENT_STATUS, AGENT_CALL, caller_key(seat.call_sid), AGENT_SINCE]
        args = [agent_id, old_call, seat.call_sid, now_ms, *fields]
        return bool(self.redis.eval(_HAND_OVER, len(keys), *keys, *args))

    def stale_reservations(self, older_than_ms: int, now_ms: int) -> list[tuple[str, str]]:
        """(agent, call) reserved longer than a connection can take: the webhooks that would have
        moved them on never came (the caller's call vanished, Redis lost a seat)."""
        return [
            (agent, call)
            for agent, (status, since, call) in self.agents().items()
            if status == "reserved" and call and since + older_than_ms <= now_ms
        ]

    def end_wrap_ups(self, wrap_up_ms: int, now_ms: int) -> list[str]:
        """Agents whose wrap-up time is over become available again."""
        done = [
            agent
            for agent, (status, since, _) in self.agents().items()
            if status == "wrap_up" and since + wrap_up_ms <= now_ms
        ]
        for agent in done:
            self.set_agent_status(agent, "available", now_ms)
        return done

    def agents(self) -> dict[str, tuple[str, int, str | None]]:
        """Agent id -> (status, since ms, call sid); agents never seen are absent (offline)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(AGENT_STATUS)
        pipe.hgetall(AGENT_SINCE)
        pipe.hgetall(AGENT_CALL)
        statuses, since, calls = pipe.execute()
        return {
            agent.decode(): (
                status.decode(),
                int(since.get(agent, 0)),
                calls[agent].decode() if agent in calls else None,
            )
            for agent, status in statuses.items()
        }

    # ----- lines a new config no longer serves ------------------------------------------

    def lines(self) -> set[tuple[str, str]]:
        """Every (queue, language) line callers have been seated in."""
        return self._registered(self.redis.smembers(LINES))

    def _registered(self, members: Iterable[bytes | str]) -> set[tuple[str, str]]:
        """The lines of LINES's members. A dataset from before the registry existed is read once
        by SCAN, and registered — once its marker is missing, not the set: a caller seated by
        the new code before the first look creates the set, and the old lines would be missed."""
        keys = {key.decode() if isinstance(key, bytes) else key for key in members}
        if SCANNED not in keys:
            keys |= {key.decode() for key in self.redis.scan_iter(match=f"{TAG}:waiting:*", count=1000)}
            self.redis.sadd(LINES, *keys, SCANNED)
        return {line_of(key) for key in keys if key != SCANNED}

    def dropped_lines(self, version: str, served: frozenset, now_ms: int, window_ms: int) -> set[tuple[str, str]]:
        """Lines callers were seated in that no config a router ran within `window_ms` serves; and
        note that a router runs `version` (serving `served`) now. One round trip. While hosts
        switch config one by one, a line the new one dropped is still the old one's, and the
        other way round: neither may be moved until every router has moved on, or they would
        move callers back and forth."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(CONFIGS, version, json.dumps({"lines": sorted(served), "seen_ms": now_ms}))
            pipe.hgetall(CONFIGS)
            pipe.smembers(LINES)
            _, reported, members = pipe.execute()
        still_served, stale = set(served), []
        for name, raw in reported.items():
            try:
                entry = json.loads(raw)
                recent = now_ms - int(entry["seen_ms"]) <= window_ms
                known = {(queue, lang) for queue, lang in entry["lines"]}
            except (ValueError, KeyError, TypeError):
                recent, known = False, set()
            if recent:
                still_served |= known
            else:
                stale.append(name)
        if stale:
            self.redis.hdel(CONFIGS, *stale)
        return self._registered(members) - still_served

    def rehome(
        self, queue: str, lang: str, by_node: dict[str, str], fallback_queue: str, lang_in: dict[str, str]
    ) -> list[tuple[str, str, str]]:
        """Move everyone waiting in (queue, lang) — a line the config no longer serves — to a line
        it does, each at their original arrival (their place among the callers there). A
        member's new queue is its transfer node's (`by_node`) or `fallback_queue`; its new
        language `lang_in[new queue]`. Seats and callback records follow. Returns (member, new
        queue, new language) for each one moved."""
        moved: list[tuple[str, str, str]] = []
        args: list[object] = [f"{TAG}:caller:", f"{TAG}:cb:", f"{TAG}:waiting:", fallback_queue, len(by_node)]
        args += [v for pair in by_node.items() for v in pair]
        args += [v for pair in lang_in.items() for v in pair]
        while batch := self._rehome(keys=[waiting_key(queue, lang), LINES], args=args):
            values = [v.decode() if isinstance(v, bytes) else v for v in batch]
            moved += [(values[i], values[i + 1], values[i + 2]) for i in range(0, len(values), 3)]
        return moved

    # ----- matching -----------------------------------------------------------------------

    def match(
        self, lines_by_agent: dict[str, list[tuple[str, str, int]]], now_ms: int, callbacks_ok: bool = True
    ) -> list[Match]:
        """Reserve available agents for waiting callers, atomically. `lines_by_agent` maps each
        agent to the (queue, language, priority) lines it may serve (from config). Callbacks
        waiting in line are matched like callers, except while `callbacks_ok` is false."""
        keys = [AGENT_STATUS, AGENT_SINCE, AGENT_CALL]
        index: dict[str, int] = {}
        args: list[object] = [now_ms, f"{TAG}:caller:", len(lines_by_agent), "1" if callbacks_ok else "0"]
        for agent_id, lines in lines_by_agent.items():
            args += [agent_id, len(lines)]
            for queue, lang, priority in lines:
                key = waiting_key(queue, lang)
                if key not in index:
                    keys.append(key)
                    index[key] = len(keys)  # Lua's KEYS are 1-based
                args += [index[key], priority]
        raw = self._match(keys=keys, args=args)
        matches = []
        for n in range(0, len(raw), 4):
            agent_id, call_sid, key_index, score = raw[n : n + 4]
            _, _, queue, lang = keys[int(key_index) - 1].split(":", 3)
            matches.append(Match(agent_id.decode(), call_sid.decode(), queue, lang, int(float(score))))
        return matches
