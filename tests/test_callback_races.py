"""Callbacks at the edges: lost or failed jobs, a dial still in flight when its reservation times
out, a retried dial that comes due after closing, asking again as the callback closes. Each
state is made for real (Redis contents, Twilio's answers at HTTP, the test clock); none of our
components is replaced."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import parse_qs

import pytest
import responses
from rq import SimpleWorker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from callbacks.dispatcher import dispatch_once
from ivr.queues.callbacks import BY_NUMBER, DIAL_PAUSE, member, record_key
from tests.test_callbacks import (  # noqa: F401 - the shared fixtures
    CALLS_URL,
    HOTLINE_NUMBER,
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
    sid,
    the_callback,
)
from tests.twiml import call_form, signed_post


@pytest.fixture
def app(make_app, sleeps):
    return make_app(TWILIO_CALLER_ID=HOTLINE_NUMBER, SLEEP=sleeps)


def created_call(n: int) -> tuple[int, dict, str]:
    return 201, {}, json.dumps({"sid": out_sid(n), "status": "queued"})


def no_gate_app(make_app, tmp_path, sleeps):
    return app_with_callbacks(make_app, tmp_path, sleeps, agent_gate=False)


def drop_scheduled_jobs(app) -> None:
    with app.app_context():
        hl = app.extensions["hotline"]
        registry = ScheduledJobRegistry(queue=hl.callbacks_queue)
        for job_id in registry.get_job_ids():
            registry.remove(job_id)
            hl.callbacks_queue.fetch_job(job_id).delete()


def test_without_the_gate_a_callback_booked_while_open_survives_a_lost_seat_job(
    make_app, tmp_path, sleeps, clock, no_unexpected_http
):
    app = no_gate_app(make_app, tmp_path, sleeps)
    hl = app.extensions["hotline"]
    book_with_caller_id(app.test_client(), 1)
    callback = the_callback(hl)
    assert callback.status == "scheduled" and callback.scheduled_ms == now_ms(clock)  # in the index
    drop_scheduled_jobs(app)  # its seat job is lost
    clock.advance(600)
    expect_dial(no_unexpected_http, 1)
    run_routing(app)  # the sweep seats it; without the gate that is the dial
    assert len(dials(no_unexpected_http)) == 1


def test_without_the_gate_the_dial_job_is_queued_with_the_dialling_status(
    make_app, tmp_path, sleeps, clock, no_unexpected_http
):
    app = no_gate_app(make_app, tmp_path, sleeps)
    hl = app.extensions["hotline"]
    book_with_caller_id(app.test_client(), 1)
    callback = the_callback(hl)
    with app.app_context():
        from callbacks.dialer import seat_callback

        assert seat_callback(callback.id) == "dialling"
        [job] = hl.callbacks_queue.get_jobs()  # written in the same transaction as the status
        assert job.func_name == "callbacks.dialer.place_callback" and job.args == (callback.id, 1)


def test_a_seat_job_that_failed_for_good_does_not_hide_its_callback_from_the_sweep(
    app, client, clock, hotline, no_unexpected_http
):
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    signed_post(client, f"/voice/callback/{callback.id}/1/status", call_form(out_sid(1), CallStatus="no-answer"))
    hotline.routing.set_agent_status("a103", "away", now_ms(clock))
    # The seat job fails at every try: its record reads as the wrong type while it runs.
    record = hotline.redis.hgetall(record_key(callback.id))
    hotline.redis.delete(record_key(callback.id))
    hotline.redis.set(record_key(callback.id), "unreadable")
    clock.advance(600)
    assert run_due_scheduled(app, clock) == 1
    with app.app_context():
        queue = hotline.callbacks_queue
        for _ in range(5):
            registry = ScheduledJobRegistry(queue=queue)
            if not registry.get_job_ids():
                break
            run_rq_retry(hotline)
        assert FailedJobRegistry(queue=queue).get_job_ids()  # failed for good, and still in Redis
    hotline.redis.delete(record_key(callback.id))
    hotline.redis.hset(record_key(callback.id), mapping=record)
    clock.advance(180)
    run_routing(app)
    assert hotline.callbacks.get(callback.id).status == "pending"
    assert hotline.routing.position(member(callback.id), "payment", "en") == 1


def test_a_call_created_after_its_attempt_was_given_up_is_cancelled_at_once(
    app, client, clock, hotline, no_unexpected_http
):
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    created = []

    def slow_twilio(request):
        created.append(request)
        if len(created) == 1:  # Twilio takes minutes to answer; the dispatcher's passes go on
            clock.advance(300)
            dispatch_once()  # the reservation times out, attempt 2 is matched
        return created_call(len(created))

    no_unexpected_http.add_callback(responses.POST, CALLS_URL, callback=slow_twilio)
    cancel_url = f"{CALLS_URL[:-5]}/{out_sid(1)}.json"
    no_unexpected_http.add(responses.POST, cancel_url, json={"sid": out_sid(1), "status": "canceled"})
    run_routing(app)
    # The sweep could not know whether the dial reached Twilio: its check finds the call (the
    # late answer recorded it), stops it, and counts it (it may have rung the customer).
    current = hotline.callbacks.get(callback.id)
    assert [(a["n"], a.get("result")) for a in current.attempts] == [(1, "no_result")]
    assert current.status == "scheduled" and len(created) == 1
    [cancel] = [parse_qs(c.request.body) for c in no_unexpected_http.calls if c.request.url == cancel_url]
    assert cancel == {"Status": ["canceled"]}  # the late first call never rings on


def test_a_dial_that_started_late_is_not_released_while_it_rings(app, client, clock, hotline, no_unexpected_http):
    """The ringing window counts from the dial, not from the reservation (a pacing queue may
    start the dial minutes after the agent was reserved)."""
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    created = []

    def slow_twilio(request):
        created.append(request)
        clock.advance(60)
        dispatch_once()  # the reservation is 260 s old now; its dial only 60 s
        return created_call(len(created))

    no_unexpected_http.add_callback(responses.POST, CALLS_URL, callback=slow_twilio)
    with app.app_context():
        dispatch_once()  # reserved, the dial job queued
        clock.advance(200)  # the job runs late
        SimpleWorker([hotline.routing_queue, hotline.callbacks_queue], connection=hotline.redis).work(burst=True)
    assert len(created) == 1
    current = hotline.callbacks.get(callback.id)
    assert current.status == "dialling" and current.attempt.get("call_sid") == out_sid(1)


def test_a_dial_retried_after_closing_is_not_placed_and_the_seat_waits(app, client, clock, hotline, no_unexpected_http):
    clock.now = datetime(2026, 11, 24, 10, 59, 30, tzinfo=UTC)  # 19:59:30 in Tokyo; closes at 20:00
    opening = "tomorrow, Wednesday, at 9 AM"  # nobody on duty this near closing: named in the offer
    book_with_caller_id(client, 1, offer=PROMPTS.callback_offer_past_closing["en"].format(key="2", opening=opening))
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    no_unexpected_http.add(responses.POST, CALLS_URL, status=429, json={"code": 20429, "message": "Too Many"})
    run_routing(app)
    clock.now = datetime(2026, 11, 24, 11, 5, tzinfo=UTC)  # 20:05: closed
    with app.app_context():
        run_rq_retry(hotline)
    assert len(dials(no_unexpected_http)) == 1  # only the rate-limited one
    current = hotline.callbacks.get(callback.id)
    assert current.status == "pending" and current.attempts[-1]["result"] == "closed"
    assert hotline.routing.agents()["a103"][0] == "available"
    assert hotline.routing.position(member(callback.id), "payment", "en") == 1


def test_asking_again_while_a_retry_waits_is_on_the_first_ticket(
    app, client, clock, hotline, no_unexpected_http, ticket_for
):
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    signed_post(client, f"/voice/callback/{callback.id}/1/status", call_form(out_sid(1), CallStatus="no-answer"))
    hotline.routing.set_agent_status("a103", "away", now_ms(clock))
    clock.advance(60)
    book_with_caller_id(client, 2)
    assert hotline.callbacks.get(callback.id).status == "pending"
    signed_post(client, "/voice/status", call_form(sid(1), CallStatus="completed"))
    assert ticket_for(sid(1))["callback"]["status"] == "pending"


def test_asking_again_as_the_callback_closes_books_a_new_one(app, client, hotline):
    book_with_caller_id(client, 1)
    first = the_callback(hotline)
    with app.app_context():
        assert hotline.callback_desk().cancel(first.id, "ops") == "cancelled"
    # The state a request finds when the cancel lands between its claim and its update.
    hotline.redis.hset(BY_NUMBER, "+819012345678", first.id)
    book_with_caller_id(client, 2)
    second = the_callback(hotline)
    assert second.id != first.id and second.status == "pending" and second.call_sid == sid(2)
    assert hotline.callbacks.get(first.id).status == "cancelled"


def test_twilio_refusing_our_account_pauses_dialling_and_costs_the_customer_nothing(
    app, client, clock, hotline, no_unexpected_http
):
    """Twilio answers 401 (our credentials were rotated): no RQ retry storm, no endless requeue
    tying up an agent, and none of the customer's attempts used up. Dialling pauses (ops see why
    in /healthz), the callback keeps its place, and after the pause the next dial tries again."""
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    error = {"code": 20003, "message": "Authenticate", "status": 401}
    no_unexpected_http.add(responses.POST, CALLS_URL, status=401, json=error)
    run_routing(app)
    current = hotline.callbacks.get(callback.id)
    assert current.status == "scheduled" and [a["result"] for a in current.attempts] == ["paused"]
    assert current.scheduled_ms == now_ms(clock) + 300_000  # back in its place when the pause ends
    assert hotline.routing.agents()["a103"][0] == "available"
    health = client.get("/healthz").get_json()
    assert health["dialling"].startswith("paused for ") and "Twilio answered 401 (20003)" in health["dialling"]
    for _ in range(3):
        run_routing(app)  # paused: no agent is reserved for a callback, nothing is dialled
    assert len(dials(no_unexpected_http)) == 1 and hotline.routing.agents()["a103"][0] == "available"
    clock.advance(301)
    hotline.redis.delete(DIAL_PAUSE)  # the pause is over (its TTL, on Redis's clock, lapsed)
    assert run_due_scheduled(app, clock) == 1
    assert hotline.callbacks.get(callback.id).status == "pending"  # in line again, at its arrival
    assert hotline.callbacks.position(hotline.callbacks.get(callback.id)) == 1
    no_unexpected_http.replace(responses.POST, CALLS_URL, status=201, json={"sid": out_sid(2), "status": "queued"})
    run_routing(app)
    current = hotline.callbacks.get(callback.id)
    assert current.status == "dialling" and current.attempt["n"] == 2 and current.attempt["call_sid"] == out_sid(2)
    assert "dialling" not in client.get("/healthz").get_json()


def test_without_the_agent_gate_a_pause_holds_callbacks_until_it_ends_not_in_a_loop(
    make_app, tmp_path, sleeps, clock, no_unexpected_http
):
    """No gate, a callback comes due by itself: Twilio's 401 pauses dialling, and the callback is
    due again when the pause ends — not at once, round and round. However many pauses an outage
    of our account lasts, the callback keeps all its tries and is dialled once it is fixed."""
    app = app_with_callbacks(make_app, tmp_path, sleeps, agent_gate=False, calls_per_second=0)
    hotline, client = app.extensions["hotline"], app.test_client()
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    error = {"code": 20003, "message": "Authenticate", "status": 401}
    no_unexpected_http.add(responses.POST, CALLS_URL, status=401, json=error)
    run_due_scheduled(app, clock)  # seated, dialled, refused: paused
    current = hotline.callbacks.get(callback.id)
    assert current.status == "scheduled" and [a["result"] for a in current.attempts] == ["paused"]
    assert current.scheduled_ms >= now_ms(clock) + 290_000  # due again once the pause is over
    assert run_due_scheduled(app, clock) == 0 and len(dials(no_unexpected_http)) == 1
    for cycle in range(2, 16):  # the token stays wrong for over an hour: a probe dial a pause
        clock.advance(301)
        hotline.redis.delete(DIAL_PAUSE)  # the pause is over (its TTL, on Redis's clock, lapsed)
        run_due_scheduled(app, clock)
        assert len(dials(no_unexpected_http)) == cycle
    current = hotline.callbacks.get(callback.id)
    assert current.status == "scheduled" and {a["result"] for a in current.attempts} == {"paused"}
    clock.advance(301)
    hotline.redis.delete(DIAL_PAUSE)
    no_unexpected_http.replace(responses.POST, CALLS_URL, status=201, json={"sid": out_sid(2), "status": "queued"})
    assert run_due_scheduled(app, clock) >= 1
    current = hotline.callbacks.get(callback.id)
    assert current.status == "dialling" and current.attempt["call_sid"] == out_sid(2)
    assert current.scheduled_ms is None
