"""The estimator's live inputs, kept in Redis, and the estimate for one waiting caller.

Webhooks only append raw facts in the pipeline they already send: an `INCR` when a queued
caller hangs up, an `RPUSH` of a finished call's handle time. The worker's dispatcher folds them
into the decayed statistics of `ivr.queues.estimator` once a pass (`fold_stats`), resynchronising
each queue's waiting count from the lines themselves, so no webhook ever reads-modifies-writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from redis.client import Pipeline

from ivr.menus.model import HotlineConfig
from ivr.queues.estimator import (
    AbandonmentState,
    AbandonmentStats,
    DecayedMeanState,
    HandleTimeStats,
    QueueSnapshot,
    SpokenWait,
    WaitEstimate,
    estimate_wait,
    spoken_range,
)
from ivr.queues.lines import agent_lines
from ivr.queues.state import TAG, RoutingState, caller_key, waiting_key

HANDLE_TIME = HandleTimeStats()
ABANDONMENT = AbandonmentStats()
BUSY = ("reserved", "busy", "wrap_up")
AWAY = ("away", "offline")


def aht_key(queue: str) -> str:
    return f"{TAG}:stats:{queue}:aht"


def abandon_key(queue: str) -> str:
    return f"{TAG}:stats:{queue}:abandon"


def abandoned_key(queue: str) -> str:
    return f"{TAG}:stats:{queue}:abandoned"  # hang-ups since the last fold


def handled_key(queue: str) -> str:
    return f"{TAG}:stats:{queue}:handled"  # handle times (s) since the last fold


def note_abandoned(pipe: Pipeline, queue: str) -> None:
    pipe.incr(abandoned_key(queue))


def note_handled(pipe: Pipeline, queue: str, handle_s: float) -> None:
    pipe.rpush(handled_key(queue), f"{handle_s:.1f}")


def fold_stats(routing: RoutingState, config: HotlineConfig, now_s: float) -> None:
    """Apply the facts appended since the last pass to each queue's statistics."""
    redis = routing.redis
    for name, queue in config.queues.items():
        pipe = redis.pipeline(transaction=True)
        pipe.hgetall(aht_key(name))
        pipe.hgetall(abandon_key(name))
        pipe.getset(abandoned_key(name), 0)
        pipe.lrange(handled_key(name), 0, -1)
        pipe.delete(handled_key(name))
        aht_raw, abandon_raw, abandoned, handled, _ = pipe.execute()
        aht = DecayedMeanState.from_mapping(aht_raw) if aht_raw else HANDLE_TIME.initial(now_s)
        for value in handled:
            aht = HANDLE_TIME.observe(aht, now_s, float(value))
        waiting = sum(size for size, _ in routing.waiting(name, queue.languages or config.languages).values())
        state = AbandonmentState.from_mapping(abandon_raw) if abandon_raw else ABANDONMENT.initial(now_s)
        state = ABANDONMENT.advance(state, now_s)
        state = AbandonmentState(state.t, waiting, state.abandons + int(abandoned or 0), state.exposure_s)
        pipe = redis.pipeline(transaction=True)
        pipe.hset(aht_key(name), mapping=aht.as_dict())
        pipe.hset(abandon_key(name), mapping=state.as_dict())
        pipe.execute()


@dataclass(frozen=True)
class CallerEstimate:
    position: int | None
    estimate: WaitEstimate
    spoken: SpokenWait
    seated: bool = False  # the caller has a seat (in line, or being connected to an agent)
    announced: dict | None = None  # what they were last told while waiting


def estimate_for(
    routing: RoutingState, config: HotlineConfig, call_sid: str | None, queue: str, lang: str, now_s: float
) -> CallerEstimate:
    """Position and estimated wait for a caller in line (or, with call_sid None, for one who
    would join now). One pipelined read, which also brings the caller's seat and what they were
    last told."""
    serving, rivals, rival_args = _line_plan(config, queue, lang)
    pipe = routing.roundtrip.pipeline()
    if call_sid:
        pipe.zrank(waiting_key(queue, lang), call_sid)
    else:
        pipe.zcard(waiting_key(queue, lang))
    pipe.hgetall(aht_key(queue))
    pipe.hgetall(abandon_key(queue))
    pipe.hgetall(f"{TAG}:agent-status")
    pipe.hmget(caller_key(call_sid or ""), "queue", "announced")
    if rivals:
        keys, ahead_only = rival_args
        pipe.eval(_RIVALS_AHEAD, len(keys), *keys, call_sid or "", int(now_s * 1000), *ahead_only)
    rank, aht_raw, abandon_raw, statuses, (seat_queue, announced), *rival_counts = routing.roundtrip.execute(pipe)
    ahead = int(rank) if rank is not None else 0
    live = [statuses.get(a.encode(), b"offline").decode() for a in serving]
    if rivals:
        ahead_for_wait = ahead + _rivals_share(rivals, rival_counts[0], statuses, serving)
    else:
        ahead_for_wait = ahead
    aht = HANDLE_TIME.value(DecayedMeanState.from_mapping(aht_raw), now_s) if aht_raw else HANDLE_TIME.prior_s
    theta = (
        ABANDONMENT.rate(AbandonmentState.from_mapping(abandon_raw), now_s)
        if abandon_raw
        else 1.0 / ABANDONMENT.prior_patience_s
    )
    snapshot = QueueSnapshot(
        ahead=ahead_for_wait,
        agents_staffed=sum(s not in AWAY for s in live),
        agents_busy=sum(s in BUSY for s in live),
        aht_s=aht,
        abandon_rate_per_s=theta,
    )
    estimate = estimate_wait(snapshot)
    position = (int(rank) + 1 if rank is not None else None) if call_sid else ahead + 1
    last = json.loads(announced) if call_sid and announced else None
    return CallerEstimate(position, estimate, spoken_range(estimate), bool(call_sid and seat_queue), last)


# KEYS: the caller's line, then rival lines. ARGV: the caller (or ""), now (ms), then per rival
# line 1 ("served first: every caller in it counts") or 0 ("same priority: those who arrived
# earlier count"). Returns, per rival line, how many of its callers an agent would take first.
_RIVALS_AHEAD = """
local arrival = nil
if ARGV[1] ~= '' then arrival = redis.call('ZSCORE', KEYS[1], ARGV[1]) end
arrival = tonumber(arrival or ARGV[2])
local out = {}
for i = 2, #KEYS do
  if ARGV[i + 1] == '1' then
    out[#out + 1] = redis.call('ZCARD', KEYS[i])
  else
    out[#out + 1] = redis.call('ZCOUNT', KEYS[i], '-inf', '(' .. arrival)
  end
end
return out
"""


# Per config version (the object, kept so its id cannot be reused): for each (queue, language)
# its agents and rival lines. They change only with the config, and a hold turn runs often.
_LINE_PLANS: dict[int, tuple[HotlineConfig, dict]] = {}


def _line_plan(config: HotlineConfig, queue: str, lang: str) -> tuple[list[str], list, tuple[list, list]]:
    """(The line's agents, its rival lines, the script's keys and per-line flags for them.)"""
    entry = _LINE_PLANS.get(id(config))
    if entry is None or entry[0] is not config:
        if len(_LINE_PLANS) >= 4:  # older versions
            _LINE_PLANS.clear()
        entry = _LINE_PLANS[id(config)] = (config, {})
    plans = entry[1]
    if (queue, lang) not in plans:
        lines = agent_lines(config)
        serving = [a for a, own in lines.items() if any(q == queue and lg == lang for q, lg, _ in own)]
        rivals = _rival_lines(config, lines, serving, queue, lang)
        keys = [waiting_key(queue, lang), *(waiting_key(q, lg) for q, lg, _, _ in rivals)]
        plans[(queue, lang)] = (serving, rivals, (keys, [1 if higher else 0 for _, _, higher, _ in rivals]))
    return plans[(queue, lang)]


def _rival_lines(
    config: HotlineConfig, lines: dict[str, list[tuple[str, str, int]]], serving: list[str], queue: str, lang: str
) -> list[tuple[str, str, bool, list[str]]]:
    """Other lines that the agents of (queue, lang) also serve and that they take first: a line
    of higher priority, or of the same priority (then by arrival) — the matching's own order.
    Each with whether it is higher, and the agents who serve it."""
    own_priority = config.queues[queue].priority if queue in config.queues else 0
    rivals = {}
    for agent in serving:
        for q, lg, priority in lines[agent]:
            if (q, lg) != (queue, lang) and priority >= own_priority:
                rivals[(q, lg)] = priority > own_priority
    return [
        (q, lg, higher, [a for a, own in lines.items() if any(x == q and y == lg for x, y, _ in own)])
        for (q, lg), higher in sorted(rivals.items())
    ]


def _rivals_share(rivals: list, counts: list, statuses: dict, serving: list[str]) -> int:
    """Callers of rival lines who will take this line's agents first, each weighted by the share
    of its line's staffed agents who are also this line's (the rest of that line's callers go to
    agents this caller could not have had anyway)."""
    staffed = {a.decode() for a, status in statuses.items() if status.decode() not in AWAY}
    ours = set(serving) & staffed
    share = 0.0
    for (_, _, _, agents), count in zip(rivals, counts, strict=True):
        on_duty = [a for a in agents if a in staffed]
        if count and on_duty:
            share += int(count) * sum(a in ours for a in on_duty) / len(on_duty)
    return round(share)
