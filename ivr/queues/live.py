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
from ivr.queues.state import TAG, RoutingState, caller_key

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
    pipe = routing.roundtrip.pipeline()
    if call_sid:
        pipe.zrank(f"{TAG}:waiting:{queue}:{lang}", call_sid)
    else:
        pipe.zcard(f"{TAG}:waiting:{queue}:{lang}")
    pipe.hgetall(aht_key(queue))
    pipe.hgetall(abandon_key(queue))
    pipe.hgetall(f"{TAG}:agent-status")
    pipe.hmget(caller_key(call_sid or ""), "queue", "announced")
    rank, aht_raw, abandon_raw, statuses, (seat_queue, announced) = routing.roundtrip.execute(pipe)
    ahead = int(rank) if rank is not None else 0
    serving = [a for a, lines in agent_lines(config).items() if any(q == queue and lg == lang for q, lg, _ in lines)]
    live = [statuses.get(a.encode(), b"offline").decode() for a in serving]
    aht = HANDLE_TIME.value(DecayedMeanState.from_mapping(aht_raw), now_s) if aht_raw else HANDLE_TIME.prior_s
    theta = (
        ABANDONMENT.rate(AbandonmentState.from_mapping(abandon_raw), now_s)
        if abandon_raw
        else 1.0 / ABANDONMENT.prior_patience_s
    )
    snapshot = QueueSnapshot(
        ahead=ahead,
        agents_staffed=sum(s not in AWAY for s in live),
        agents_busy=sum(s in BUSY for s in live),
        aht_s=aht,
        abandon_rate_per_s=theta,
    )
    estimate = estimate_wait(snapshot)
    position = (int(rank) + 1 if rank is not None else None) if call_sid else ahead + 1
    last = json.loads(announced) if call_sid and announced else None
    return CallerEstimate(position, estimate, spoken_range(estimate), bool(call_sid and seat_queue), last)
