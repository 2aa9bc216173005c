"""Callback jobs: seat a callback at its time, place the call, text the caller after the last
failed attempt. Jobs take ids and let exceptions propagate so RQ retries them.

Exactly one dial per attempt, even when a worker dies between Twilio's answer and our record of
it (Twilio's create-call has no idempotency key). The attempt in the callback's record is the
outbox: `dial_started_at` is written *before* the request and `call_sid` after it (or by the
call's `initiated` status callback, whichever comes first). A run that finds `dial_started_at`
without a `call_sid` does not know whether the first run reached Twilio, so it asks Twilio's call
list for a call to that number from our number since then, and adopts it instead of dialling.
A short lock per attempt keeps two runs from dialling at the same moment.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from flask import current_app, url_for
from redis.client import Pipeline
from rq import Queue, Retry, get_current_job
from twilio.base.exceptions import TwilioRestException

from ivr.phone import may_take_texts
from ivr.privacy import mask_number
from ivr.queues.callback_desk import attempt_mode
from ivr.queues.callbacks import DIAL_PAUSE_S, Callback, member
from ivr.services import services

log = logging.getLogger(__name__)

DIAL_RETRY = Retry(max=5, interval=[1, 5, 15, 30, 60])
SEAT_RETRY = Retry(max=5, interval=[2, 10, 30, 60, 300])
SMS_RETRY = Retry(max=5, interval=[10, 60, 300, 900, 1800])
# Twilio errors that no retry can fix: the number is invalid, unreachable, not permitted,
# blocked or has opted out. The callback fails at once (no more attempts).
PERMANENT_ERRORS = frozenset({21211, 21214, 21215, 21216, 21217, 21401, 21407, 21421, 21610, 13223, 13224, 13225})
# HTTP statuses of a create-call that say our account cannot dial (authentication, permission,
# an account Twilio does not know), whoever the number.
ACCOUNT_ERRORS = frozenset({401, 403, 404})
PACE_KEY = "{routing}:cb-pace"
# A job sleeps at most this long for its slot; a slot further off is kept, and the job comes back
# at that time through RQ's scheduler, so a long pacing queue never holds workers asleep (live
# callers' routing jobs and ticket syncs go on being served).
MAX_PACING_SLEEP_S = 2.0
# ... and it is scheduled this much before its slot: RQ's scheduler moves due jobs about once a
# second and a worker takes a moment more, so a job scheduled at its slot would dial up to a
# second or two late (the next dial then follows within a fraction of the spacing). Arriving
# early, it sleeps the rest and dials on its slot.
PACED_EARLY_S = 1.5
# Slots are taken on Redis's own clock, so every worker on every host paces as one.
_PACE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local slot = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
local following = slot + tonumber(ARGV[1])
redis.call('SET', KEYS[1], string.format('%d', following), 'PX', math.floor((following - now) / 1000) + 60000)
return {string.format('%d', slot - now), string.format('%d', slot)}
"""


class DialInProgress(RuntimeError):
    """Another job is dialling this attempt right now."""


def schedule_seat(queue: Queue, callback: Callback, when: datetime) -> None:
    """At `when`, put the callback back in line (RQ's scheduler, run by the worker). The job id
    is per callback, attempt and time: a repeated schedule for the same time replaces rather
    than doubles it, and a seat job that reschedules (it ran after closing) never replaces
    itself (RQ deletes a finished job under its id). The dispatcher's sweep seats any callback
    whose job was lost all the same (`route`)."""
    job_id = seat_job_id(callback, when.timestamp())
    queue.enqueue_at(when, seat_callback, callback.id, job_id=job_id, retry=SEAT_RETRY, result_ttl=0)


def seat_job_id(callback: Callback, when_s: float) -> str:
    return f"cb-seat-{callback.id}-{len(callback.attempts)}-{int(when_s)}"


def enqueue_dial(
    queue: Queue,
    callback_id: str,
    attempt: int,
    at: datetime | None = None,
    slot_us: int | None = None,
    pipeline: Pipeline | None = None,
) -> None:
    """Queue the dial job of an attempt (at a pacing slot's time, when given; in `pipeline`, a
    transaction of the caller's, when given)."""
    args = (callback_id, attempt) if slot_us is None else (callback_id, attempt, slot_us)
    if pipeline is not None:
        job = Queue.prepare_data(place_callback, args, retry=DIAL_RETRY, timeout=60, result_ttl=0)
        queue.enqueue_many([job], pipeline=pipeline)
    elif at is not None:
        queue.enqueue_at(at, place_callback, *args, retry=DIAL_RETRY, job_timeout=60, result_ttl=0)
    else:
        queue.enqueue(place_callback, *args, retry=DIAL_RETRY, job_timeout=60, result_ttl=0)


def seat_callback(callback_id: str) -> str:
    hotline = services()
    desk = hotline.callback_desk()

    def dial_now(pipe: Pipeline, callback: Callback) -> None:  # no agent gate: dial now
        enqueue_dial(hotline.callbacks_queue, callback.id, callback.attempt["n"], pipeline=pipe)

    return desk.seat(callback_id, on_dialling=dial_now)


def take_dial_slot(calls_per_second: float) -> tuple[float, int | None]:
    """This dial's slot under the account-wide pacing: (seconds from now, slot time in µs on
    Redis's clock); (0, None) when pacing is off."""
    if calls_per_second <= 0:
        return 0.0, None
    gap_us = int(1_000_000 / calls_per_second)
    wait_us, slot_us = services().redis.eval(_PACE, 1, PACE_KEY, gap_us)
    return int(wait_us) / 1_000_000, int(slot_us)


def seconds_until(slot_us: int) -> float:
    seconds, micros = services().redis.time()
    return (slot_us - (seconds * 1_000_000 + micros)) / 1_000_000


def place_callback(callback_id: str, attempt_no: int, slot_us: int | None = None) -> str:
    """Dial attempt `attempt_no` of a callback whose agent is reserved: the customer (customer
    first), or the reserved agent, whose call then dials the customer (agent first)."""
    hotline = services()
    desk = hotline.callback_desk()
    callback, why = _undialled(desk, callback_id, attempt_no)
    if callback is None:
        return why
    # The lock's token is the job's id: RQ runs a job again only after its last run ended, so a
    # lock under our own id is that run's, left by a work-horse killed while dialling.
    job = get_current_job()
    token = job.id if job is not None else uuid.uuid4().hex
    if not desk.book.dial_lock(callback_id, attempt_no, token, ttl_s=90):
        # Another run holds this attempt: let RQ try again after it (if that run died, its lock
        # lapses before our last retry, and the outbox tells us whether it reached Twilio).
        raise DialInProgress(f"callback {callback_id} attempt {attempt_no} is being dialled by another job")
    try:
        # Read again under the lock: another run may have dialled between our first read and
        # the lock (its outbox entries are what tell this run not to dial again).
        callback, why = _undialled(desk, callback_id, attempt_no)
        return _dial(callback, callback.attempt, slot_us) if callback is not None else why
    finally:
        desk.book.release_dial_lock(callback_id, attempt_no, token)


def _undialled(desk, callback_id: str, n: int) -> tuple[Callback | None, str]:  # noqa: ANN001 - a CallbackDesk
    """The callback while its attempt n awaits its dial; else None and why not."""
    callback = desk.book.get(callback_id)
    if callback is None or not callback.dialling(n):
        return None, "stale"
    return (callback, "") if callback.awaits_dial(n) else (None, "already placed")


def _dial(callback: Callback, attempt: dict, slot_us: int | None) -> str:
    hotline = services()
    desk = hotline.callback_desk()
    n = attempt["n"]
    caller_id = current_app.config.get("TWILIO_CALLER_ID")
    if not caller_id:
        raise RuntimeError("TWILIO_CALLER_ID is unset: callbacks need the hotline's number as From")
    agent_first = attempt_mode(desk.policy, attempt) == "agent_first"
    to = _dial_target(desk, callback, attempt)
    if to is None:  # the agent left the config while reserved: back to the seat
        desk.attempt_over(callback.id, n, "released")
        return "agent unknown"
    placed = _find_placed_call(to, attempt, caller_id)
    if placed:
        desk.record_dial(callback.id, n, "call_sid", placed)
        log.warning("callback %s attempt %d: adopted call %s placed by an earlier run", callback.id, n, placed)
        return "adopted"
    if slot_us is not None and seconds_until(slot_us) < -1.0:
        slot_us = None  # an RQ retry long after its slot: that slot is spent, take a fresh one
    if slot_us is None:
        wait_s, slot_us = take_dial_slot(desk.policy.calls_per_second)
        if slot_us is not None and wait_s > MAX_PACING_SLEEP_S:
            at = datetime.fromtimestamp(slot_us / 1_000_000 - PACED_EARLY_S, UTC)
            enqueue_dial(hotline.callbacks_queue, callback.id, n, at=at, slot_us=slot_us)
            return "paced"
    else:  # back just before our slot (RQ schedules to the whole second): the rest of the wait
        wait_s = seconds_until(slot_us)
        if wait_s > MAX_PACING_SLEEP_S + PACED_EARLY_S:  # far too early (a clock jump): again later
            at = datetime.fromtimestamp(slot_us / 1_000_000 - PACED_EARLY_S, UTC)
            enqueue_dial(hotline.callbacks_queue, callback.id, n, at=at, slot_us=slot_us)
            return "paced"
    if wait_s > 0:
        hotline.sleep(wait_s)  # at most MAX_PACING_SLEEP_S (+ PACED_EARLY_S back at a slot)
    paused = hotline.callbacks.dialling_paused()
    if paused is not None:
        # Twilio refused our account a moment ago (no gate: this callback came due by itself):
        # back to its place, due again once the pause is over.
        desk.attempt_over(callback.id, n, "paused", not_before=hotline.clock() + timedelta(seconds=paused[1]))
        return "paused"
    if not desk.plan.hours.is_open(hotline.clock()):
        # A retried or paced dial that comes due after closing: not now. Back to its seat (the
        # matching leaves callbacks alone until opening), no attempt counted against the customer.
        desk.attempt_over(callback.id, n, "closed")
        return "closed"
    started = desk.record_dial(callback.id, n, "dial_started_at", hotline.clock().isoformat())
    if started is None or not started.awaits_dial(n):
        # Settled while we looked in Twilio's list or waited for our pacing slot (its
        # reservation timed out, say): nobody waits for this dial any more.
        return "stale"
    answer_url, status_url = _urls(callback.id, n, agent_first)
    params: dict[str, object] = {
        "to": to,
        "from_": caller_id,
        "url": answer_url,
        "method": "POST",
        "status_callback": status_url,
        "status_callback_method": "POST",
        "status_callback_event": ["initiated", "ringing", "answered", "completed"],
        "timeout": desk.plan.config.routing.ring_timeout_s if agent_first else desk.policy.ring_timeout_s,
    }
    if desk.policy.machine_detection and not agent_first:  # agent first: detected on the customer's leg
        params["machine_detection"] = "Enable"
    try:
        call = hotline.twilio().calls.create(**params)
    except TwilioRestException as exc:
        if exc.status and exc.status < 500:
            # Twilio refused, so it placed nothing: the outbox may say so. A 5xx is no such
            # answer (Twilio's edge may fail after its back end created the call): the outbox
            # keeps the dial's start, and the retry looks in Twilio's call list first.
            desk.record_dial(callback.id, n, "dial_started_at", None)
        refused = exc.code in PERMANENT_ERRORS or exc.status in (400, 422)
        if refused and agent_first:
            # The number refused is the agent's (their phone or client name in config), not
            # the customer's: the agent is set away and the callback keeps its place.
            agent_id = attempt.get("agent") or ""
            log.error("callback %s: Twilio refused agent %s's number (%s); set away", callback.id, agent_id, exc.code)
            desk.routing.transition(agent_id, member(callback.id), ["reserved"], "away", desk.now_ms)
            desk.attempt_over(callback.id, n, "agent_unreachable")
            return "agent unreachable"
        if refused:
            log.warning("callback %s to %s: Twilio refused (%s)", callback.id, mask_number(callback.number), exc.code)
            desk.attempt_over(callback.id, n, f"rejected:{exc.code}", final=True)
            return "rejected"
        if exc.status in ACCOUNT_ERRORS:
            # Refused for our account's sake (credentials rotated, the account suspended), not
            # the customer's: every dial would fail alike. Pause dialling (the router dials none
            # meanwhile; /healthz says why) and put the callback back in its place, uncounted.
            why = f"Twilio answered {exc.status} ({exc.code}) to a dial at {hotline.clock().isoformat()}"
            log.error("callbacks: %s; dialling paused for %d s", why, DIAL_PAUSE_S)
            hotline.callbacks.pause_dialling(why)
            desk.attempt_over(callback.id, n, "paused", not_before=hotline.clock() + timedelta(seconds=DIAL_PAUSE_S))
            return "paused"
        if exc.status and 400 <= exc.status < 500 and exc.status != 429:
            # Refused for a reason no quick retry fixes: a failed attempt, retried after the
            # spacing like no answer, so it cannot loop on an agent.
            log.error("callback %s attempt %d: Twilio answered %s (%s)", callback.id, n, exc.status, exc.code)
            desk.attempt_over(callback.id, n, f"error:{exc.code or exc.status}")
            return "error"
        if _last_try():
            if exc.status and exc.status < 500:  # a rate limit: Twilio placed nothing
                desk.attempt_over(callback.id, n, "released")  # the agent is freed; the seat kept
            else:
                _resolve_unknown_dial_later(callback.id, n)
        raise
    except Exception:
        # Unknown: the request may have reached Twilio. The next run checks before dialling;
        # after the last one, a job asks Twilio's call list before the attempt is settled.
        if _last_try():
            _resolve_unknown_dial_later(callback.id, n)
        raise
    recorded = desk.record_dial(callback.id, n, "call_sid", call.sid)
    if recorded is None or not recorded.dialling(n) or recorded.attempt.get("call_sid") != call.sid:
        # The attempt was given up on while Twilio took the request (its reservation timed
        # out, say), or another run's call is the attempt's: nobody waits for this call, so it
        # must not ring.
        log.warning("callback %s attempt %d: given up while dialling; cancelling %s", callback.id, n, call.sid)
        cancel_call(call.sid)
        return "cancelled"
    log.info("callback %s attempt %d: dialled %s", callback.id, n, mask_number(callback.number))
    return "dialled"


def _resolve_unknown_dial_later(callback_id: str, n: int) -> None:
    """The attempt's last create-call ended with no answer from Twilio (a timeout, a 5xx): the
    call may exist. Settling it as never placed would let the next attempt ring the customer a
    second time, so a job asks Twilio first (`resolve_unknown_dial`)."""
    services().callbacks_queue.enqueue(
        resolve_unknown_dial,
        callback_id,
        n,
        job_id=f"cb-unknown-{callback_id}-{n}",
        retry=DIAL_RETRY,
        job_timeout=60,
        result_ttl=0,
    )


def resolve_unknown_dial(callback_id: str, n: int) -> str:
    """Attempt n's dial ended unknown after its last try: adopt the call if Twilio's list shows
    it (it rings now; its webhooks settle it as any other), else it was never placed and the
    callback goes back to its place. Dials nothing. If this job fails too, the attempt stays
    dialling with its start in the outbox, and the router's sweep settles it through Twilio's
    call list (`settle_lost_dial`)."""
    hotline = services()
    desk = hotline.callback_desk()
    callback, why = _undialled(desk, callback_id, n)
    if callback is None:
        return why
    attempt = callback.attempt
    placed = _find_placed_call(
        _dial_target(desk, callback, attempt), attempt, current_app.config.get("TWILIO_CALLER_ID") or ""
    )
    if placed:
        recorded = desk.record_dial(callback_id, n, "call_sid", placed)
        if recorded is not None and recorded.dialling(n) and recorded.attempt.get("call_sid") == placed:
            log.warning("callback %s attempt %d: adopted call %s its dial placed unanswered", callback_id, n, placed)
            return "adopted"
        cancel_call(placed)
        return "settled"
    # Twilio failed every try of this dial: back in its place, but not at once — each time this
    # happens to a callback it waits longer (1, 2, 4, 8, then 15 minutes), so a long Twilio
    # outage costs it a few uncounted attempts, not all of its tries within half an hour.
    failed_before = sum(1 for a in callback.attempts[:-1] if a.get("result") == "released" and a.get("dial_started_at"))
    later = hotline.clock() + timedelta(minutes=min(2**failed_before, 15))
    desk.attempt_over(callback_id, n, "released", not_before=later)
    return "never placed"


def settle_lost_dial(callback_id: str, n: int) -> str:
    """Attempt n's dial began, and no answer from Twilio nor any webhook followed (the job died
    with its worker): find out from Twilio's call list whether the call exists, then settle the
    attempt. A placed call is stopped and, customer first (it rang the customer), counted; one
    never placed puts the callback back in its place. Either way the agent is freed."""
    hotline = services()
    desk = hotline.callback_desk()
    callback = desk.book.get(callback_id)
    if callback is None or not callback.dialling(n):
        return "settled"
    attempt = callback.attempt
    agent_first = attempt_mode(desk.policy, attempt) == "agent_first"
    placed = attempt.get("call_sid") or _find_placed_call(
        _dial_target(desk, callback, attempt), attempt, current_app.config.get("TWILIO_CALLER_ID") or ""
    )
    if placed:
        desk.record_dial(callback_id, n, "call_sid", placed)
        desk.attempt_over(callback_id, n, "released" if agent_first else "no_result", placed)
        cancel_call(placed)
        return "placed"
    desk.attempt_over(callback_id, n, "released")
    return "never placed"


def _dial_target(desk, callback: Callback, attempt: dict) -> str | None:  # noqa: ANN001 - a CallbackDesk
    """Whom the attempt's create-call rings: the customer, or (agent first) the reserved agent;
    None when that agent is no longer in the config."""
    if attempt_mode(desk.policy, attempt) != "agent_first":
        return callback.number
    agent = next((a for a in desk.plan.config.agents if a.id == attempt.get("agent")), None)
    return (agent.phone or f"client:{agent.client}") if agent is not None else None


def _find_placed_call(to: str | None, attempt: dict, caller_id: str) -> str | None:
    """A call Twilio holds to `to` from our number, created since the attempt began dialling;
    None without a dial begun (nothing can have reached Twilio) or anyone to ring."""
    if not to or not attempt.get("dial_started_at"):
        return None
    # A little slack for the clocks of our hosts and Twilio's; calls that belong to other
    # attempts are not ours (agent first, the agent gets a call for every callback).
    since = datetime.fromisoformat(attempt["dial_started_at"]) - timedelta(seconds=30)
    taken = services().callbacks.placed_since(int((since - timedelta(hours=1)).timestamp() * 1000))
    for call in services().twilio().calls.list(to=to, from_=caller_id, limit=20):
        created = call.date_created
        if call.sid not in taken and (created is None or created >= since):
            return call.sid
    return None


def _urls(callback_id: str, n: int, agent_first: bool) -> tuple[str, str]:
    """The outbound call's Url and StatusCallback: the customer's, or (agent first) the agent's."""
    base = current_app.config.get("PUBLIC_BASE_URL")
    if not base:
        raise RuntimeError("PUBLIC_BASE_URL is unset: Twilio needs an absolute URL for the callback")
    answer, status = (
        ("voice.callback_agent", "voice.callback_agent_status")
        if agent_first
        else (
            "voice.callback_answer",
            "voice.callback_status",
        )
    )
    with current_app.test_request_context(base_url=base):
        return (
            url_for(answer, callback_id=callback_id, n=n, _external=True),
            url_for(status, callback_id=callback_id, n=n, _external=True),
        )


def _last_try() -> bool:
    job = get_current_job()
    return job is None or not job.retries_left


def cancel_call(call_sid: str) -> str:
    """Stop an attempt we gave up on while Twilio may still be ringing it, so the customer is
    not answered by a call nobody waits on (a call already answered is left to its webhooks)."""
    try:
        services().twilio().calls(call_sid).update(status="canceled")
    except TwilioRestException as exc:
        if exc.status == 404 or exc.code in (20404, 21220):
            return "not ringing"
        raise
    return "canceled"


def send_failure_sms(callback_id: str) -> str:
    """After the last failed attempt: tell the caller by text (their language, their reference)."""
    hotline = services()
    callback = hotline.callbacks.get(callback_id)
    if callback is None or callback.status != "failed":
        return "not failed"
    if not may_take_texts(callback.number):
        log.info("callback %s: no failure text, the number is a landline", callback_id)
        return "landline"
    job = get_current_job()
    if not hotline.callbacks.claim_failure_text(callback_id, job.id if job is not None else uuid.uuid4().hex):
        return "already sent"
    config = hotline.config.current().config
    lang_id = callback.lang if callback.lang in config.languages else config.default_language
    body = config.prompts.callback_failed_sms[lang_id].format(
        hotline=config.name_in(lang_id), reference=str(callback.reference or "")
    )
    desk = hotline.callback_desk()
    caller_id = current_app.config["TWILIO_CALLER_ID"]
    # The outbox, as for dials: a run whose create-message lost its reply (a timeout, a 5xx)
    # may have sent the text, so a retry looks in Twilio's message list before sending again.
    began_ms = hotline.callbacks.failure_text_began(callback_id, desk.now_ms)
    if began_ms is not None and _text_already_sent(callback.number, caller_id, body, began_ms):
        log.warning("callback %s: the failure text an earlier run sent reached Twilio; not sent again", callback_id)
    else:
        try:
            hotline.twilio().messages.create(to=callback.number, from_=caller_id, body=body)
        except TwilioRestException as exc:
            if exc.code in PERMANENT_ERRORS or (exc.status and 400 <= exc.status < 500 and exc.status != 429):
                log.warning("callback %s: failure text refused (%s)", callback_id, exc.code)
                hotline.callbacks.failure_text_refused(callback_id)
                desk.note(callback, "callback_sms_refused", event_id=f"cb-{callback.id}-sms-refused", code=exc.code)
                return "refused"
            if exc.status and exc.status < 500:  # a rate limit: nothing was sent
                hotline.callbacks.failure_text_refused(callback_id)
            raise
    desk.book.mark_sms_sent(callback_id, desk.now_ms)
    desk.note(callback, "callback_sms", event_id=f"cb-{callback.id}-sms")
    return "sent"


def _text_already_sent(number: str, caller_id: str, body: str, began_ms: int) -> bool:
    """Whether Twilio holds our text to `number` created since an earlier run began sending it."""
    since = datetime.fromtimestamp(began_ms / 1000, UTC) - timedelta(seconds=30)  # clock slack
    for message in services().twilio().messages.list(to=number, from_=caller_id, limit=20):
        created = message.date_created
        # `in`: Twilio may prefix what it stores (a trial account's "Sent from your Twilio trial account - ").
        if body in (message.body or "") and (created is None or created >= since):
            return True
    return False
