"""Routing in the worker: match waiting callers with available agents, and the RQ job that
redirects a reserved caller's call to the agent (Twilio REST). Jobs take ids and let
exceptions propagate; a reservation that cannot be completed is released, never leaked."""

from __future__ import annotations

import logging
from datetime import datetime

from flask import current_app, url_for
from rq import Queue, Retry, get_current_job
from rq.job import Job, JobStatus
from twilio.base.exceptions import TwilioRestException

from callbacks.dialer import DIAL_RETRY, cancel_call, place_callback, seat_callback, seat_job_id, settle_lost_dial
from ivr.menus.runtime import Plan
from ivr.queues.callback_desk import attempt_mode
from ivr.queues.callbacks import callback_id_of
from ivr.queues.lines import agent_lines, rehome_line
from ivr.services import services
from ivr.settings import dial_settings_missing

log = logging.getLogger(__name__)

CONNECT_RETRY = Retry(max=2, interval=[1, 3])
# RQ's scheduler enqueues due jobs about once a second; past this, a seat job is taken as lost.
OVERDUE_GRACE_MS = 120_000
# Twilio's answer when the call is no longer there to redirect (the caller hung up meanwhile).
_CALL_GONE = {20404, 21220}


def _seat_job_will_run(job_id: str) -> bool:
    """Whether the seat job of a callback overdue by the grace is still to run: queued (a
    backlog) or running. Not when it is gone, failed for good (RQ keeps a failed job, which must
    not look alive), or still scheduled: then no scheduler is moving due jobs (a worker killed
    with the scheduler's lock, which a new worker takes only at its next maintenance, minutes
    later). Seating is idempotent, so the job running late as well does no harm."""
    status = _job_status(job_id)
    return status is not None and status not in (
        JobStatus.FAILED,
        JobStatus.STOPPED,
        JobStatus.CANCELED,
        JobStatus.SCHEDULED,
    )


def _job_status(job_id: str) -> str | None:
    """An RQ job's status, None when there is no such job. One HGET, not Job.fetch: during a
    burst the sweep asks this of up to 100 callbacks a pass."""
    status = services().redis.hget(Job.key_for(job_id), "status")
    return status.decode() if status is not None else None


def _settle_lost_dial_once(callback_id: str, n: int) -> None:
    """Queue `settle_lost_dial` unless it is already queued, running or waiting for a retry."""
    job_id = f"cb-lost-{callback_id}-{n}"
    if _job_status(job_id) in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
        return
    log.warning("callback %s attempt %d: its dial never reported back; checking with Twilio", callback_id, n)
    services().callbacks_queue.enqueue(
        settle_lost_dial, callback_id, n, job_id=job_id, retry=DIAL_RETRY, job_timeout=60, result_ttl=0
    )


# How long a config version counts as still run by some router after its last pass: longer than
# a pass (1 s) and a reload's lag (2 s), with room for a busy worker.
CONFIG_SEEN_WINDOW_MS = 30_000


def rehome_dropped_lines(plan: Plan, now_ms: int) -> int:
    """Callers and callbacks waiting in a line a reload dropped (a queue renamed or removed, a
    language no longer served) would wait for ever: no agent is matched with a line the config
    does not name. Move them to a line it does, at their places — once no router still runs a
    config that serves it (several hosts switch one by one). One round trip a pass when nothing
    was dropped; web processes still on the old config for a moment may seat someone there
    again: a later pass moves them too."""
    hotline = services()
    moved = 0
    for queue, lang in sorted(hotline.routing.dropped_lines(plan.version, plan.lines, now_ms, CONFIG_SEEN_WINDOW_MS)):
        moved_here = rehome_line(hotline.routing, hotline.calls, plan.config, queue, lang, hotline.clock())
        if moved_here:
            log.warning(
                "line %s/%s is not in the config any more: %d waiting moved at their places (to %s)",
                queue,
                lang,
                len(moved_here),
                ", ".join(sorted({f"{q}/{lg}" for _, q, lg in moved_here})),
            )
        moved += len(moved_here)
    return moved


def _settle_stale_attempt(desk, callback, since_ms: int, now_ms: int, limit_ms: int) -> str:  # noqa: ANN001
    """A callback attempt that has been dialling for longer than any dial, ring and machine
    detection take: 'waiting' (not that long yet, or Twilio is being asked), else 'settled'
    (or 'gone': the callback moved on meanwhile). Its agent, if any, is the caller's to free."""
    attempt = callback.attempt if callback is not None else None
    started = attempt.get("dial_started_at") if attempt else None
    if started:  # the ringing window starts when the dial does (pacing may delay it)
        since_ms = max(since_ms, int(datetime.fromisoformat(started).timestamp() * 1000))
    if since_ms + limit_ms > now_ms:
        return "waiting"
    if attempt is None or not callback.dialling(attempt["n"]):
        return "gone"
    if started and not attempt.get("call_sid"):
        # The dial began and nothing came back: its job died (with its whole worker, say), and
        # nobody knows whether Twilio placed the call. A job asks Twilio's call list before the
        # attempt is settled, so a placed call is never placed again.
        _settle_lost_dial_once(callback.id, attempt["n"])
        return "waiting"
    placed = attempt.get("call_sid")
    # A customer-first call was placed and rang the customer, but its webhooks never came (our
    # web tier down, say): that counts as an attempt, or a customer could be rung without end.
    # Our other failures put the callback back in its place.
    rang = placed and attempt_mode(desk.policy, attempt) == "customer_first"
    desk.attempt_over(callback.id, attempt["n"], "no_result" if rang else "released")
    if placed:
        services().callbacks_queue.enqueue(cancel_call, placed, retry=CONNECT_RETRY, result_ttl=0)
    return "settled"


def route(queue: Queue) -> int:
    """One routing pass: end due wrap-ups, reserve agents for callers, queue the connections."""
    hotline = services()
    plan = hotline.config.current()
    now_ms = int(hotline.clock().timestamp() * 1000)
    routing = plan.config.routing
    rehome_dropped_lines(plan, now_ms)
    hotline.routing.end_wrap_ups(routing.wrap_up_s * 1000, now_ms)
    # A reservation outlives a connection only if its webhooks never came: release it.
    limit_ms = (routing.ring_timeout_s + routing.accept_timeout_s + 60) * 1000
    # A callback's reservation also covers dialling the customer and machine detection.
    callback_limit_ms = limit_ms + (plan.config.callbacks.ring_timeout_s + 30 + 60) * 1000
    desk = hotline.callback_desk(plan)
    for agent_id, call_sid in hotline.routing.stale_reservations(limit_ms, now_ms):
        callback_id = callback_id_of(call_sid)
        if callback_id is not None:
            callback = hotline.callbacks.get(callback_id)
            since = hotline.routing.agents().get(agent_id, ("", now_ms, None))[1]
            if _settle_stale_attempt(desk, callback, since, now_ms, callback_limit_ms) == "waiting":
                continue
            log.warning("agent %s: reservation for callback %s timed out; released", agent_id, callback_id)
            hotline.routing.transition(agent_id, call_sid, ["reserved"], "available", now_ms)
            # A dispatcher that died between the match and the reservation's record left the
            # callback pending with its seat out of line: put it back at its arrival.
            hotline.callbacks.reseat(callback_id)
            continue
        log.warning("agent %s: reservation for call %s timed out; released", agent_id, call_sid)
        hotline.routing.transition(agent_id, call_sid, ["reserved"], "available", now_ms)
        hotline.routing.back_to_line(call_sid)
    # Without the agent gate no agent is reserved, so no reservation times out: an attempt whose
    # dial went out and whose webhooks never came is found by when it began. Only once its dial
    # began: before that it may wait its turn, for a pacing slot or in a backlog of dial jobs.
    paused, lost = hotline.callbacks.dial_watch(now_ms - callback_limit_ms)
    for callback_id in lost:
        callback = hotline.callbacks.get(callback_id)
        if callback is None or callback.status != "dialling" or callback.agent:
            # Its record is gone (Redis lost it), or it moved on as the index was filled at a
            # worker's start: nothing to settle, and it must not crowd out those that need it.
            hotline.callbacks.unindex_unless_dialling(callback_id)
            continue
        attempt = callback.attempt
        if attempt and attempt.get("dial_started_at"):
            began_ms = int(datetime.fromisoformat(attempt["at"]).timestamp() * 1000)
            if _settle_stale_attempt(desk, callback, began_ms, now_ms, callback_limit_ms) == "settled":
                log.warning("callback %s: its attempt never reported back; settled", callback_id)
    # Callbacks are dialled only within business hours; live callers are served regardless.
    # ... and only with what a dial needs: without it an agent would be reserved, a dial fail,
    # the reservation time out and the agent be reserved again for ever, the callback stuck in
    # `dialling` where ops cannot cancel it. Undialled, it keeps its place (and can be cancelled).
    callbacks_ok = (
        plan.hours.is_open(hotline.clock())
        and not dial_settings_missing(current_app.config)
        and not paused  # Twilio refused our account a moment ago
    )
    if callbacks_ok:
        # A scheduled callback whose seat job never ran (lost with a crash, say) still comes back.
        for callback_id in hotline.callbacks.overdue(now_ms - OVERDUE_GRACE_MS):
            callback = hotline.callbacks.get(callback_id)
            if callback is None or callback.scheduled_ms is None:
                continue
            if _seat_job_will_run(seat_job_id(callback, callback.scheduled_ms / 1000)):
                continue  # only late (a backlog), not lost: it will run
            log.warning("callback %s: its scheduled seat job is lost or failed; seating it now", callback_id)
            try:
                seat_callback(callback_id)
            except Exception:  # one bad callback must not stop live callers being routed
                log.exception("callback %s: seating it failed; the next pass tries again", callback_id)
    matches = hotline.routing.match(agent_lines(plan.config), now_ms, callbacks_ok=callbacks_ok)
    jobs, dials = [], []
    for m in matches:
        callback_id = callback_id_of(m.call_sid)
        if callback_id is None:
            jobs.append(
                Queue.prepare_data(
                    connect_agent, (m.agent_id, m.call_sid), retry=CONNECT_RETRY, timeout=30, result_ttl=0
                )
            )
            continue
        callback = desk.reserve(callback_id, m.agent_id)
        if callback is None:  # cancelled while it waited: the agent is free again
            hotline.routing.transition(m.agent_id, m.call_sid, ["reserved"], "available", now_ms)
            hotline.routing.leave(m.call_sid)
            continue
        # Dials have their own queue: a burst of callbacks never delays a live caller's connection.
        dials.append(
            Queue.prepare_data(
                place_callback, (callback_id, callback.attempt["n"]), retry=DIAL_RETRY, timeout=60, result_ttl=0
            )
        )
    if jobs:
        queue.enqueue_many(jobs)
    if dials:
        hotline.callbacks_queue.enqueue_many(dials)
    return len(matches)


def connect_agent(agent_id: str, call_sid: str) -> str:
    """Redirect the queued caller to the Dial of the agent reserved for them."""
    hotline = services()
    seat = hotline.routing.seat(call_sid)
    if seat is None:
        _release(agent_id, call_sid, back_to_line=False)
        return "caller gone"
    base = current_app.config.get("PUBLIC_BASE_URL")
    if not base:
        raise RuntimeError("PUBLIC_BASE_URL is unset: Twilio needs an absolute URL to reach the agent")
    with current_app.test_request_context(base_url=base):
        url = url_for("voice.connect", lang=seat.lang, agent_id=agent_id, _external=True)
    try:
        hotline.twilio().calls(call_sid).update(url=url, method="POST")
    except TwilioRestException as exc:
        if exc.status == 404 or exc.code in _CALL_GONE:
            _release(agent_id, call_sid, back_to_line=False)
            return "caller gone"
        if _last_attempt():
            _release(agent_id, call_sid, back_to_line=True)
        raise
    except Exception:
        if _last_attempt():
            _release(agent_id, call_sid, back_to_line=True)
        raise
    return "redirected"


def _last_attempt() -> bool:
    job = get_current_job()
    return job is None or not job.retries_left


def _release(agent_id: str, call_sid: str, back_to_line: bool) -> None:
    """Undo a reservation: the agent is free again; the caller keeps their place (or is gone)."""
    hotline = services()
    now_ms = int(hotline.clock().timestamp() * 1000)
    if back_to_line:
        hotline.routing.back_to_line(call_sid)
    else:
        hotline.routing.leave(call_sid)
    status = hotline.routing.agents().get(agent_id)
    if status and status[0] == "reserved" and status[2] == call_sid:
        hotline.routing.set_agent_status(agent_id, "available", now_ms)
    log.info("released agent %s from call %s (%s)", agent_id, call_sid, "requeued" if back_to_line else "gone")
