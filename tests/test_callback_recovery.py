"""Callbacks through the failures an adversarial review found: webhooks overtaken or lost, a
Twilio 5xx, a refused agent number, a dispatcher killed mid-pass, a redial after a crash (real
Redis, real RQ SimpleWorker, Twilio's REST API faked with `responses`)."""

from __future__ import annotations

import json
import re
from datetime import UTC
from email.utils import format_datetime
from urllib.parse import parse_qs

import pytest
import requests
import responses
from rq.registry import ScheduledJobRegistry

from callbacks.dialer import PACE_KEY
from callbacks.dispatcher import dispatch_once
from ivr.queues.callback_desk import MAX_UNCOUNTED_ATTEMPTS
from ivr.queues.callbacks import member, record_key
from ivr.queues.lines import agent_lines
from ivr.queues.state import waiting_key
from tests.test_callbacks import (
    CALLS_URL,
    CONFIG,
    HOTLINE_NUMBER,
    MESSAGES_URL,
    OPS,
    PROMPTS,
    app_with_callbacks,
    book_and_dial,
    book_with_caller_id,
    dials,
    expect_dial,
    now_ms,
    out_sid,
    run_due_scheduled,
    run_routing,
    run_rq_retry,
    the_callback,
)
from tests.twiml import call_form, parse, says, signed_post, verbs


@pytest.fixture
def app(make_app, sleeps):
    return make_app(TWILIO_CALLER_ID=HOTLINE_NUMBER, SLEEP=sleeps)


def scripted_calls(mock, outcomes: list) -> list:
    """Calls.json POSTs answered in order: an int n is a 201 with out_sid(n); an exception is
    raised (the answer never reached us); a (status, body) pair is a Twilio error."""
    seen: list = []

    def answer(request):
        outcome = outcomes[len(seen)]
        seen.append(parse_qs(request.body))
        if isinstance(outcome, Exception):
            return outcome
        if isinstance(outcome, tuple):
            status, body = outcome
            return status, {}, json.dumps(body)
        return 201, {}, json.dumps({"sid": out_sid(outcome), "status": "queued"})

    mock.add_callback(responses.POST, CALLS_URL, callback=answer)
    return seen


def run_dial_retries(app) -> None:
    """The dial jobs RQ scheduled for a retry (not seat jobs), run now, as the scheduler would."""
    from rq import SimpleWorker
    from rq.registry import ScheduledJobRegistry

    with app.app_context():
        hl = app.extensions["hotline"]
        queue = hl.callbacks_queue
        registry = ScheduledJobRegistry(queue=queue)
        for job_id in registry.get_job_ids():
            job = queue.fetch_job(job_id)
            if job.func_name == "callbacks.dialer.place_callback":
                registry.remove(job_id)
                queue.enqueue_job(job)
        SimpleWorker([queue], connection=hl.redis).work(burst=True)


def listing(*calls: tuple[str, str, object]) -> dict:
    return {
        "calls": [
            {"sid": s, "to": to, "from": HOTLINE_NUMBER, "date_created": format_datetime(when, usegmt=True)}
            for s, to, when in calls
        ],
        "next_page_uri": None,
        "page": 0,
        "page_size": 20,
    }


def _agent_first_booking(make_app, tmp_path, sleeps, clock):
    """An agent-first hotline with one booked callback and Emma (a103) free: (app, services, callback)."""
    app = app_with_callbacks(make_app, tmp_path, sleeps, dial_mode="agent_first")
    hl = app.extensions["hotline"]
    book_with_caller_id(app.test_client(), 1)
    hl.routing.set_agent_status("a103", "available", now_ms(clock))
    return app, hl, the_callback(hl)


# ----- the completed status callback overtakes the answer webhook ------------------------------


def test_completed_before_answer_neither_closes_the_callback_nor_leaves_a_ghost_seat(
    app, client, clock, hotline, no_unexpected_http
):
    """The customer answers; our answer webhook is slow (or Twilio's status callback simply
    arrives first) and the customer hangs up in the silence. The status callback is processed
    first: attempt 1 'hung_up', a retry scheduled. Then the (earlier sent) answer webhook runs."""
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    cb = f"/voice/callback/{callback.id}/1"
    signed_post(client, f"{cb}/status", call_form(out_sid(1), CallStatus="completed", SequenceNumber="3"))
    assert hotline.callbacks.get(callback.id).status == "scheduled"  # a retry in 10 minutes
    hotline.routing.set_agent_status("a103", "away", now_ms(clock))

    form = call_form(out_sid(1), AnsweredBy="human", From=HOTLINE_NUMBER, To="+819012345678")
    signed_post(client, f"{cb}/answer", form)

    current = hotline.callbacks.get(callback.id)
    # The customer never talked to anyone: the retry must stand.
    assert current.status == "scheduled", (current.status, current.attempts)
    # And the finished call must not hold a place in line ahead of live callers.
    assert hotline.redis.zscore(waiting_key("payment", "en"), out_sid(1)) is None


# ----- agent first: a redial after a crash never adopts another callback's call ---------------


def test_agent_first_retry_after_a_crash_does_not_adopt_the_previous_callbacks_call(
    make_app, tmp_path, sleeps, clock, no_unexpected_http
):
    app = app_with_callbacks(make_app, tmp_path, sleeps, dial_mode="agent_first")
    hl = app.extensions["hotline"]
    client = app.test_client()
    book_with_caller_id(client, 1, frm="+819011110001")
    clock.advance(5)
    book_with_caller_id(client, 2, frm="+819011110002")
    a = the_callback(hl, "+819011110001")
    b = the_callback(hl, "+819011110002")
    # Call 2 is B's dial whose answer never reaches us (the work-horse dies / the connection
    # resets before Twilio's reply); call 3 is the redial the retry must make.
    no_unexpected_http.assert_all_requests_are_fired = False
    posts = scripted_calls(no_unexpected_http, [1, requests.ConnectionError("reset"), 3])
    first_call_at = clock.now
    hl.routing.set_agent_status("a103", "available", now_ms(clock))
    run_routing(app)  # Emma is called for A
    agent_leg = call_form(out_sid(1), From=HOTLINE_NUMBER, To="client:emma", Direction="outbound-api")
    cb_a = f"/voice/callback/{a.id}/1"
    signed_post(client, f"{cb_a}/agent", agent_leg)
    signed_post(client, f"{cb_a}/agent/accept", {**agent_leg, "Digits": "1"})
    clock.advance(8)  # A's customer is busy: Emma is free again
    signed_post(client, f"{cb_a}/agent/done", {**agent_leg, "DialCallStatus": "busy"})
    assert hl.callbacks.get(a.id).status == "scheduled"
    assert hl.routing.agents()["a103"][0] == "available"

    clock.advance(2)
    run_routing(app)  # Emma is reserved for B; B's create-call answer is lost
    assert len(posts) == 2 and hl.callbacks.get(b.id).attempt["dial_started_at"]
    # Twilio's list of calls to Emma from our number holds only A's call (10 s old).
    no_unexpected_http.add(
        responses.GET, CALLS_URL, json=listing((out_sid(1), "client:emma", first_call_at.astimezone(UTC)))
    )
    run_dial_retries(app)
    attempt = hl.callbacks.get(b.id).attempt
    assert attempt.get("call_sid") != out_sid(1), "B adopted A's finished call: nobody dials B"
    assert len(posts) == 3


# ----- a Twilio 5xx is an unknown result: the outbox is kept and looked up ---------------------


def test_a_5xx_from_twilio_is_an_unknown_result_looked_up_before_any_redial(
    app, client, clock, hotline, no_unexpected_http
):
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    # Twilio's edge times out on its back end and answers 503; the call was created all the same.
    error = {"code": 20503, "message": "Service Unavailable", "status": 503}
    posts = scripted_calls(no_unexpected_http, [(503, error), 2])
    no_unexpected_http.add(
        responses.GET, CALLS_URL, json=listing((out_sid(1), "+819012345678", clock.now.astimezone(UTC)))
    )
    run_routing(app)
    run_dial_retries(app)
    assert len(posts) == 1, "the customer was dialled twice for attempt 1"
    assert hotline.callbacks.get(callback.id).attempt["call_sid"] == out_sid(1)


# ----- agent first: Twilio refuses the *agent's* number ---------------------------------------


def test_agent_first_a_refused_agent_number_does_not_fail_the_customers_callback(
    make_app, tmp_path, sleeps, clock, no_unexpected_http
):
    app, hl, callback = _agent_first_booking(make_app, tmp_path, sleeps, clock)
    # The create-call is to client:emma; Twilio refuses that 'To' (a bad agent entry in config).
    error = {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}
    no_unexpected_http.add(responses.POST, CALLS_URL, status=400, json=error)
    no_unexpected_http.assert_all_requests_are_fired = False
    no_unexpected_http.add(responses.POST, MESSAGES_URL, status=201, json={"sid": "SM" + "1" * 32})
    run_routing(app)
    current = hl.callbacks.get(callback.id)
    # Nothing is wrong with the customer's number: their callback must not be failed (and
    # texted "we could not reach you") because of the agent's phone.
    assert current.status != "failed", (current.status, current.reason)


# ----- webhooks that never come: the customer is not rung without end -------------------------


def test_a_customer_is_not_rung_more_than_the_configured_attempts_when_webhooks_are_lost(
    app, client, clock, hotline, no_unexpected_http
):
    """Our web tier is down (or the status URL unreachable) while workers run: each call rings the
    customer, nothing settles it, the sweep 'releases' it — not counted — and dials again."""
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    posts = scripted_calls(no_unexpected_http, list(range(1, 10)))
    no_unexpected_http.add(responses.POST, re.compile(CALLS_URL[:-5] + r"/CA\w+\.json"), json={"status": "canceled"})
    run_routing(app)
    for _ in range(5):
        clock.advance(300)
        hotline.redis.delete(PACE_KEY)  # five minutes pass on Redis's clock too: the pacing slot is free
        run_routing(app)
    attempts = hotline.callbacks.get(callback.id).attempts
    assert len(posts) <= 3, f"{len(posts)} calls placed to the customer: {[a.get('result') for a in attempts]}"


# ----- a worker killed between the match and the reservation's record ------------------------


def test_a_dispatcher_killed_between_match_and_reserve_does_not_lose_the_callback(
    app, client, clock, hotline, no_unexpected_http
):
    """The dispatcher thread runs in the worker. The match script has taken the callback's seat
    out of line and reserved Emma; the worker is SIGKILLed before `desk.reserve` records the
    attempt (or `reserve` raised on a Redis blip). The stale-reservation sweep frees Emma — and
    must put the callback back in its place."""
    no_unexpected_http.assert_all_requests_are_fired = False
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    with app.app_context():
        plan = hotline.config.current()
        [m] = hotline.routing.match(agent_lines(plan.config), now_ms(clock))  # route()'s first step
    assert m.call_sid == member(callback.id) and hotline.callbacks.position(callback) is None
    # ... the process dies here. Later, a pass of a restarted worker's dispatcher:
    clock.advance(400)
    expect_dial(no_unexpected_http, 1)
    run_routing(app)
    current = hotline.callbacks.get(callback.id)
    # Emma is free, and the callback is back in its place (or already dialled again): not left
    # pending in no line and no schedule, where nothing would ever match, seat or dial it.
    assert current.status == "dialling" or hotline.callbacks.position(current) == 1, (
        current.status,
        hotline.callbacks.position(current),
        hotline.routing.agents()["a103"][0],
    )


# ----- agent first: the agent of a finished callback wraps up in full --------------------------


def test_agent_first_done_agent_wraps_up_for_the_full_wrap_up_time(
    make_app, tmp_path, sleeps, clock, no_unexpected_http
):
    app, hl, callback = _agent_first_booking(make_app, tmp_path, sleeps, clock)
    client = app.test_client()
    expect_dial(no_unexpected_http, 1)
    run_routing(app)
    cb = f"/voice/callback/{callback.id}/1"
    leg = call_form(out_sid(1), From=HOTLINE_NUMBER, To="client:emma", Direction="outbound-api")
    signed_post(client, f"{cb}/agent", leg)
    signed_post(client, f"{cb}/agent/accept", {**leg, "Digits": "1"})
    signed_post(client, f"{cb}/intro", call_form("CA" + "c" * 32, ParentCallSid=out_sid(1), AnsweredBy="human"))
    clock.advance(300)
    signed_post(client, f"{cb}/agent/done", {**leg, "DialCallStatus": "completed", "DialBridged": "true"})
    signed_post(client, f"{cb}/agent/status", {**leg, "CallStatus": "completed"})
    clock.advance(29)
    with app.app_context():
        dispatch_once()
    assert hl.routing.agents()["a103"][0] == "wrap_up"  # not freed before wrap_up_s (30 s)
    clock.advance(1)
    with app.app_context():
        dispatch_once()
    assert hl.routing.agents()["a103"][0] == "available"


# ----- our side failing again and again: not tried forever ------------------------------------


def test_a_callback_our_side_keeps_failing_is_given_up_after_a_bound_and_texted(
    app, client, clock, hotline, no_unexpected_http
):
    """Released attempts (our failures) do not count against the customer, but they cannot go on
    without end: past the configured attempts plus MAX_UNCOUNTED_ATTEMPTS, the callback fails."""
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    policy = hotline.config.current().config.callbacks
    with app.app_context():
        for n in range(1, policy.attempts + MAX_UNCOUNTED_ATTEMPTS + 1):
            desk = hotline.callback_desk()
            assert desk.reserve(callback.id, "a103") is not None, n
            desk.attempt_over(callback.id, n, "released")
    current = hotline.callbacks.get(callback.id)
    assert (current.status, current.reason) == ("failed", "too_many_tries")
    assert hotline.callbacks.position(current) is None
    with app.app_context():
        [job] = [hotline.callbacks_queue.fetch_job(i) for i in hotline.callbacks_queue.job_ids]
    assert job.func_name == "callbacks.dialer.send_failure_sms"


def test_an_answer_for_a_given_up_attempt_after_the_call_ended_closes_nothing(
    app, client, clock, hotline, no_unexpected_http
):
    """We gave up on attempt 1 (its reservation timed out); the call's completed status comes,
    then its (slow) answer webhook: the customer is gone, so the retry stands and no seat is
    taken for the dead call."""
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    with app.app_context():
        hotline.callback_desk().attempt_over(callback.id, 1, "released")
    cb = f"/voice/callback/{callback.id}/1"
    signed_post(client, f"{cb}/status", call_form(out_sid(1), CallStatus="completed"))
    form = call_form(out_sid(1), AnsweredBy="human", From=HOTLINE_NUMBER, To="+819012345678")
    root = parse(signed_post(client, f"{cb}/answer", form))
    assert [child.tag for child in root] == ["Hangup"]
    current = hotline.callbacks.get(callback.id)
    assert current.status == "pending" and hotline.callbacks.position(current) == 1
    assert hotline.redis.zscore(waiting_key("payment", "en"), out_sid(1)) is None


# ----- two runs of one attempt at the same moment -------------------------------------------


def test_a_run_that_finds_the_attempt_being_dialled_waits_and_never_dials_twice(
    app, client, clock, hotline, no_unexpected_http
):
    """Another run holds the attempt's dial lock (it is calling Twilio right now): this run does
    not dial; RQ retries it, and by then the first run's call is in the outbox."""
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    assert hotline.callbacks.dial_lock(callback.id, 1, "the-other-run", ttl_s=90)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    run_routing(app)  # the job meets the lock: no request to Twilio
    assert dials(no_unexpected_http) == []
    with app.app_context():
        # ... the other run's dial lands meanwhile, and it lets go of the lock.
        hotline.callback_desk().record_dial(callback.id, 1, "call_sid", out_sid(7))
        hotline.callbacks.release_dial_lock(callback.id, 1, "the-other-run")
        run_rq_retry(hotline)
    assert dials(no_unexpected_http) == []  # "already placed": still one call for the attempt
    assert hotline.callbacks.get(callback.id).attempt["call_sid"] == out_sid(7)


# ----- the whole worker dies mid-dial: no job is left to retry --------------------------------


def _a_dial_whose_worker_died(app, clock, hotline, mock, reached_twilio: bool):
    """The dial job sends the create-call; then its whole worker dies (with the job's retry):
    the attempt says the dial began, nothing says how it ended, and no job is left."""
    mock.assert_all_requests_are_fired = False
    posts = scripted_calls(mock, [requests.ConnectionError("the worker died"), 2])
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    run_routing(app)
    with app.app_context():
        registry = ScheduledJobRegistry(queue=hotline.callbacks_queue)
        for job_id in registry.get_job_ids():  # the retry RQ scheduled went with the worker
            registry.remove(job_id)
    attempt = hotline.callbacks.get(callback.id).attempt
    assert attempt["dial_started_at"] and not attempt.get("call_sid") and len(posts) == 1
    created = [(out_sid(1), "+819012345678", clock.now.astimezone(UTC))] if reached_twilio else []
    mock.add(responses.GET, CALLS_URL, json=listing(*created))
    return callback, posts


def test_a_dial_lost_with_its_worker_is_looked_up_and_its_call_stopped_not_placed_again(
    app, client, clock, hotline, no_unexpected_http
):
    book_with_caller_id(client, 1)
    callback, posts = _a_dial_whose_worker_died(app, clock, hotline, no_unexpected_http, reached_twilio=True)
    cancel_url = f"{CALLS_URL[:-5]}/{out_sid(1)}.json"
    no_unexpected_http.add(responses.POST, cancel_url, json={"sid": out_sid(1), "status": "canceled"})
    clock.advance(60)
    run_routing(app)
    assert hotline.callbacks.get(callback.id).status == "dialling"  # within the ringing window
    clock.advance(400)
    run_routing(app)  # the sweep asks Twilio; the call it placed is stopped and counted
    current = hotline.callbacks.get(callback.id)
    assert [(a["result"], a.get("call_sid")) for a in current.attempts] == [("no_result", out_sid(1))]
    assert current.status == "scheduled" and len(posts) == 1
    assert [c.request.url for c in no_unexpected_http.calls].count(cancel_url) == 1
    assert hotline.routing.agents()["a103"][0] == "available"


def test_a_dial_lost_with_its_worker_that_never_reached_twilio_keeps_its_place_and_is_dialled(
    app, client, clock, hotline, no_unexpected_http
):
    book_with_caller_id(client, 1)
    callback, posts = _a_dial_whose_worker_died(app, clock, hotline, no_unexpected_http, reached_twilio=False)
    clock.advance(460)
    run_routing(app)  # nothing at Twilio: released, back in its place
    assert hotline.callbacks.get(callback.id).attempts[0]["result"] == "released"
    run_routing(app)  # matched again: attempt 2 is dialled
    current = hotline.callbacks.get(callback.id)
    assert current.status == "dialling" and current.attempt["n"] == 2 and len(posts) == 2


def test_a_customer_answering_a_callback_whose_record_is_lost_hears_an_apology(
    app, client, clock, hotline, no_unexpected_http
):
    """Redis lost the callback's record while its call rang: the person who answers is told, in
    every language (theirs is lost too), instead of a mute hang-up."""
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    hotline.redis.delete(record_key(callback.id))
    assert hotline.callbacks.get(callback.id) is None
    form = call_form(out_sid(1), AnsweredBy="human", From=HOTLINE_NUMBER, To="+819012345678")
    root = parse(signed_post(client, f"/voice/callback/{callback.id}/1/answer", form))
    assert [s.text for s in says(root)] == [PROMPTS.fallback[lang] for lang in ("ja", "zh", "en")]
    assert verbs(root)[-1] == "Hangup"


def test_a_customer_answering_a_callback_cancelled_meanwhile_is_told_so(
    app, client, clock, hotline, no_unexpected_http
):
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    with app.app_context():
        hotline.callback_desk().attempt_over(callback.id, 1, "released")
        assert hotline.callback_desk().cancel(callback.id, "ops") == "cancelled"
    form = call_form(out_sid(1), AnsweredBy="human", From=HOTLINE_NUMBER, To="+819012345678")
    root = parse(signed_post(client, f"/voice/callback/{callback.id}/1/answer", form))
    # We called them: who we are, where the callback stands, and no "thank you for calling".
    hello = PROMPTS.callback_this_is["en"].format(hotline=CONFIG.name_in("en"))
    assert [s.text for s in says(root)] == [hello, PROMPTS.callback_cancelled["en"], PROMPTS.callback_goodbye["en"]]
    assert verbs(root)[-1] == "Hangup"


# ----- the last try's reply is lost: look before the next attempt rings again ------------------


def _every_reply_lost(make_app, tmp_path, sleeps, clock, mock, last_reached_twilio: bool, then: list):
    """Each of the dial job's six runs (one and RQ's five retries) sends the create-call and loses
    Twilio's reply (a connection reset); the first five never reached Twilio, the last one did
    when `last_reached_twilio`. Pacing off, so each retry is the same job's. Returns (app, client,
    services, callback, the create-calls seen)."""
    app = app_with_callbacks(make_app, tmp_path, sleeps, calls_per_second=0)
    client, hotline = app.test_client(), app.extensions["hotline"]
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    posts = scripted_calls(mock, [requests.ConnectionError("reset")] * 6 + then)

    def calls_list(_request):
        reached = last_reached_twilio and len(posts) == 6
        created = [(out_sid(6), "+819012345678", clock.now.astimezone(UTC))] if reached else []
        return 200, {}, json.dumps(listing(*created))

    mock.add_callback(responses.GET, CALLS_URL, callback=calls_list)
    run_routing(app)
    for _ in range(5):
        run_dial_retries(app)  # the last run's failure queues the look-up; the burst runs it
    return app, client, hotline, callback, posts


def test_a_call_the_last_try_placed_unanswered_is_adopted_not_placed_again(
    make_app, tmp_path, sleeps, clock, no_unexpected_http
):
    app, client, hotline, callback, posts = _every_reply_lost(
        make_app, tmp_path, sleeps, clock, no_unexpected_http, True, []
    )
    current = hotline.callbacks.get(callback.id)
    assert len(posts) == 6 and current.status == "dialling" and current.attempt["call_sid"] == out_sid(6)
    run_routing(app)
    assert len(posts) == 6, "the customer's phone rang for a second call of the same attempt"
    # ... and the call it adopted goes on as any other: the customer answers, Emma is connected.
    answer = call_form(out_sid(6), From=HOTLINE_NUMBER, To="+819012345678", Direction="outbound-api")
    root = parse(signed_post(client, f"/voice/callback/{callback.id}/1/answer", {**answer, "AnsweredBy": "human"}))
    assert verbs(root) == ["Say", "Dial"] and root.find("Dial").find("Client").text == "emma"
    assert hotline.callbacks.get(callback.id).status == "done"


def test_when_the_last_try_placed_nothing_the_callback_keeps_its_place_and_is_dialled_once_more(
    make_app, tmp_path, sleeps, clock, no_unexpected_http
):
    app, client, hotline, callback, posts = _every_reply_lost(
        make_app, tmp_path, sleeps, clock, no_unexpected_http, False, [7]
    )
    current = hotline.callbacks.get(callback.id)
    assert current.status == "scheduled" and current.attempts[0]["result"] == "released"
    assert hotline.routing.agents()["a103"][0] == "available"
    # Twilio failed every try: back in its place in a minute, not at once.
    assert current.scheduled_ms == now_ms(clock) + 60_000
    clock.advance(60)
    run_due_scheduled(app, clock)  # back in line at its original arrival
    assert hotline.callbacks.position(hotline.callbacks.get(callback.id)) == 1
    run_routing(app)  # matched again: attempt 2, one dial
    current = hotline.callbacks.get(callback.id)
    assert len(posts) == 7 and current.attempt["n"] == 2 and current.attempt["call_sid"] == out_sid(7)


def test_an_attempts_call_is_the_first_one_recorded(app, client, clock, hotline):
    """Two runs that both dialled one attempt: the first call recorded stays the attempt's (the
    other run sees it is not and cancels its own), whichever order their news comes in."""
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    with app.app_context():
        desk = hotline.callback_desk()
        assert desk.reserve(callback.id, "a103") is not None
        assert desk.record_dial(callback.id, 1, "call_sid", out_sid(1)).attempt["call_sid"] == out_sid(1)
        assert desk.record_dial(callback.id, 1, "call_sid", out_sid(2)).attempt["call_sid"] == out_sid(1)
        assert desk.record_dial(callback.id, 1, "call_sid", out_sid(1)).attempt["call_sid"] == out_sid(1)


def test_without_the_agent_gate_an_attempt_whose_webhooks_never_came_is_settled(
    make_app, tmp_path, sleeps, clock, no_unexpected_http
):
    """No agent is reserved, so no reservation times out: the sweep finds the attempt by when it
    began, stops its call and counts it (it rang the customer); the callback is retried and
    ops can cancel it again."""
    app = app_with_callbacks(make_app, tmp_path, sleeps, agent_gate=False, calls_per_second=0)
    hotline, client = app.extensions["hotline"], app.test_client()
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    expect_dial(no_unexpected_http, 1)
    run_due_scheduled(app, clock)  # the seat job: dialling, and the dial goes out
    assert hotline.callbacks.get(callback.id).status == "dialling"
    cancel_url = f"{CALLS_URL[:-5]}/{out_sid(1)}.json"
    no_unexpected_http.add(responses.POST, cancel_url, json={"sid": out_sid(1), "status": "canceled"})
    clock.advance(60)
    run_routing(app)
    assert hotline.callbacks.get(callback.id).status == "dialling"  # still within its ringing window
    clock.advance(400)
    run_routing(app)
    current = hotline.callbacks.get(callback.id)
    assert [(a["result"], a.get("call_sid")) for a in current.attempts] == [("no_result", out_sid(1))]
    assert current.status == "scheduled"
    assert [c.request.url for c in no_unexpected_http.calls].count(cancel_url) == 1
    assert client.post(f"/api/callbacks/{callback.id}/cancel", headers=OPS).status_code == 200


def test_the_news_of_a_second_runs_cancelled_call_does_not_settle_the_call_that_rings(
    app, client, clock, hotline, no_unexpected_http
):
    """Run 1's create-call gets a 503 though Twilio created call X; the RQ retry finds nothing in
    the call list yet and dials Y; X's `initiated` status came first, so X is the attempt's and Y
    is cancelled. Y's `canceled` status settles nothing; the customer answering X is connected."""
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    x, y = out_sid(1), out_sid(2)
    status_url = f"/voice/callback/{callback.id}/1/status"
    outbound = {"From": HOTLINE_NUMBER, "To": "+819012345678", "Direction": "outbound-api"}
    posts = []

    def create(request):
        posts.append(request.body)
        if len(posts) == 1:
            return 503, {}, json.dumps({"code": 20503, "message": "Service Unavailable", "status": 503})
        signed_post(client, status_url, call_form(x, CallStatus="initiated", **outbound))  # while Y is created
        return 201, {}, json.dumps({"sid": y, "status": "queued"})

    no_unexpected_http.add_callback(responses.POST, CALLS_URL, callback=create)
    no_unexpected_http.add(responses.GET, CALLS_URL, json=listing())
    cancel_y = f"{CALLS_URL[:-5]}/{y}.json"
    no_unexpected_http.add(responses.POST, cancel_y, json={"sid": y, "status": "canceled"})
    run_routing(app)
    run_dial_retries(app)
    assert len(posts) == 2 and hotline.callbacks.get(callback.id).attempt["call_sid"] == x
    assert [c.request.url for c in no_unexpected_http.calls].count(cancel_y) == 1
    signed_post(client, status_url, call_form(y, CallStatus="canceled", **outbound))
    current = hotline.callbacks.get(callback.id)
    assert current.status == "dialling" and "result" not in current.attempt
    assert hotline.routing.agents()["a103"][0] == "reserved"
    root = parse(
        signed_post(client, f"/voice/callback/{callback.id}/1/answer", call_form(x, AnsweredBy="human", **outbound))
    )
    assert verbs(root) == ["Say", "Dial"] and root.find("Dial").find("Client").text == "emma"
    assert hotline.callbacks.get(callback.id).status == "done"


def test_without_the_agent_gate_a_dial_waiting_for_its_pacing_slot_is_not_taken_for_lost(
    make_app, tmp_path, sleeps, clock, no_unexpected_http
):
    """At the opening hundreds come due at once; at 1 call a second the last wait minutes for
    their slot. The sweep for lost dials leaves an attempt alone until its dial began."""
    app = app_with_callbacks(make_app, tmp_path, sleeps, agent_gate=False)
    hotline, client = app.extensions["hotline"], app.test_client()
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    seconds, micros = hotline.redis.time()
    hotline.redis.set(PACE_KEY, str((seconds + 400) * 1_000_000 + micros), px=500_000)  # 400 s of backlog
    run_due_scheduled(app, clock)  # seated: dialling, its dial job waits for its slot
    for _ in range(6):
        clock.advance(230)
        run_routing(app)
    current = hotline.callbacks.get(callback.id)
    assert current.status == "dialling" and [a["n"] for a in current.attempts] == [1]
    assert "result" not in current.attempt and dials(no_unexpected_http) == []


def test_a_worker_starting_indexes_dialling_callbacks_from_before_the_sweeps_index(
    make_app, tmp_path, sleeps, clock, no_unexpected_http
):
    """A callback left dialling (no gate) by a version without the index, its webhooks lost: the
    worker's start puts it in, and the sweep settles it; an entry of one that moved on goes."""
    from ivr.queues.callbacks import DIALLING

    app = app_with_callbacks(make_app, tmp_path, sleeps, agent_gate=False, calls_per_second=0)
    hotline, client = app.extensions["hotline"], app.test_client()
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    expect_dial(no_unexpected_http, 1)
    run_due_scheduled(app, clock)
    hotline.redis.delete(DIALLING)  # as before the index existed
    hotline.redis.zadd(DIALLING, {"9999": 1})  # and an entry whose record is gone
    assert hotline.callbacks.index_dialling() == 1
    cancel_url = f"{CALLS_URL[:-5]}/{out_sid(1)}.json"
    no_unexpected_http.add(responses.POST, cancel_url, json={"sid": out_sid(1), "status": "canceled"})
    clock.advance(460)
    run_routing(app)
    assert hotline.callbacks.get(callback.id).attempts[0]["result"] == "no_result"
    assert hotline.redis.zcard(DIALLING) == 0
