"""Every call becomes a ticket even when its final status callback never comes (our server was
down or deploying at that moment, the number lacks the status callback): the dispatcher asks
Twilio about calls started LOOK_AFTER_S ago that have not ended, and writes what it learns."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import urlsplit

import pytest
import responses
from rq import Queue, SimpleWorker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from callbacks.dispatcher import dispatch_once
from callbacks.tickets import dispatch_unfinished
from ivr.calllog import LOOK_AFTER_S, UNFINISHED_KEY
from ivr.services import TICKETS_QUEUE
from tests.conftest import ACCOUNT_SID
from tests.twiml import call_form, signed_post


def sid(n: int) -> str:
    return f"CA{n:032x}"


def call_url(call_sid: str) -> str:
    return f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{call_sid}.json"


STARTED = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def twilio_call(
    call_sid: str, status: str, ended: datetime | None = None, duration: str | None = None, **extra: str
) -> dict:
    """A call resource as Twilio's REST API returns it (the fields the settle job reads)."""
    return {
        "sid": call_sid,
        "account_sid": ACCOUNT_SID,
        "from": "+819012345678",
        "to": "+815012345678",
        "direction": "inbound",
        "status": status,
        "start_time": format_datetime(STARTED, usegmt=True),
        "end_time": format_datetime(ended, usegmt=True) if ended else None,
        "duration": duration,
        **extra,
    }


def walk_to_payment(client, call_sid: str) -> None:
    """Incoming, English, the payment menu; then nothing more (the final status is lost)."""
    signed_post(client, "/voice/incoming", call_form(call_sid, CallStatus="ringing"))
    signed_post(client, "/voice/language?attempt=1", call_form(call_sid, Digits="3"))
    signed_post(client, "/voice/en/node/main/choice?attempt=1", call_form(call_sid, Digits="2"))


@pytest.fixture
def settle(app):
    """The dispatcher's look at unfinished calls `later_s` from now, then the worker's jobs
    (settle, then the ticket syncs it marked due); returns how many calls it looked at."""

    def run(later_s: float = LOOK_AFTER_S + 1) -> int:
        with app.app_context():
            hotline = app.extensions["hotline"]
            looked = dispatch_unfinished(hotline.redis, hotline.tickets_queue, now=time.time() + later_s)
            queue = Queue(TICKETS_QUEUE, connection=hotline.redis)
            SimpleWorker([queue], connection=hotline.redis).work(burst=True)
            return looked

    return run


def unfinished(app) -> dict[str, float]:
    redis = app.extensions["hotline"].redis
    return {member.decode(): score for member, score in redis.zrange(UNFINISHED_KEY, 0, -1, withscores=True)}


def assert_fetched(mock: responses.RequestsMock, call_sid: str) -> None:
    (call,) = mock.calls
    assert call.request.method == "GET"
    assert urlsplit(call.request.url).path == urlsplit(call_url(call_sid)).path
    assert call.request.headers["Authorization"].startswith("Basic ")  # the account's credentials


def test_a_call_whose_final_status_never_came_is_finished_from_twilio(
    app, client, settle, ticket_for, no_unexpected_http
):
    call_sid = sid(1)
    started = time.time()
    walk_to_payment(client, call_sid)
    look_at = unfinished(app)[call_sid]
    assert started + LOOK_AFTER_S <= look_at <= time.time() + LOOK_AFTER_S

    assert settle(later_s=LOOK_AFTER_S - 60) == 0  # too early: Twilio is not asked
    ended = datetime(2026, 12, 1, 2, 3, 20, tzinfo=UTC)
    no_unexpected_http.add(responses.GET, call_url(call_sid), json=twilio_call(call_sid, "completed", ended, "200"))
    assert settle() == 1
    assert_fetched(no_unexpected_http, call_sid)

    ticket = ticket_for(call_sid)
    assert ticket["status"] == "completed"
    assert ticket["ended_at"] == ended.isoformat()
    assert ticket["duration_s"] == 200
    assert ticket["outcome"] == "hung_up_in_menu" and ticket["branch"] == "payment"
    assert [step["node"] for step in ticket["path"]] == ["language", "main", "payment"]
    assert call_sid not in unfinished(app)
    assert settle(later_s=3 * LOOK_AFTER_S) == 0  # settled for good: Twilio is asked once


def test_a_call_still_live_gets_its_ticket_so_far_and_is_looked_at_again(
    app, client, settle, ticket_for, no_unexpected_http
):
    call_sid = sid(2)
    walk_to_payment(client, call_sid)
    no_unexpected_http.add(responses.GET, call_url(call_sid), json=twilio_call(call_sid, "in-progress"))
    assert settle() == 1
    ticket = ticket_for(call_sid)
    assert (ticket["outcome"], ticket["ended_at"]) == ("in_progress", None)
    # Looked at again one interval after this look, not at every dispatcher pass meanwhile.
    assert unfinished(app)[call_sid] > time.time() + 2 * LOOK_AFTER_S - 60
    assert settle() == 0

    # Then its final status does come: the call is done with, and its ticket finished.
    signed_post(client, "/voice/status", call_form(call_sid, CallStatus="completed", CallDuration="1900"))
    assert call_sid not in unfinished(app)
    ticket = ticket_for(call_sid)
    assert (ticket["status"], ticket["duration_s"]) == ("completed", 1900)


def test_a_call_twilio_does_not_know_is_written_as_it_stands(app, client, settle, ticket_for, no_unexpected_http):
    call_sid = sid(3)  # a simulated call against a hotline with real credentials, say
    walk_to_payment(client, call_sid)
    error = {"code": 20404, "message": "The requested resource was not found", "status": 404}
    no_unexpected_http.add(responses.GET, call_url(call_sid), status=404, json=error)
    assert settle() == 1
    assert call_sid not in unfinished(app)
    ticket = ticket_for(call_sid)
    assert (ticket["outcome"], ticket["branch"]) == ("in_progress", "payment")


def test_without_twilio_credentials_the_ticket_is_written_as_it_stands(
    make_app, settle, ticket_for, no_unexpected_http
):
    # `settle` and `ticket_for` use the `app` fixture; this test's app is another one.
    local = make_app(TWILIO_ACCOUNT_SID="")
    client = local.test_client()
    call_sid = sid(4)
    walk_to_payment(client, call_sid)
    with local.app_context():
        hotline = local.extensions["hotline"]
        assert dispatch_unfinished(hotline.redis, hotline.tickets_queue, now=time.time() + LOOK_AFTER_S + 1) == 1
        queue = Queue(TICKETS_QUEUE, connection=hotline.redis)
        SimpleWorker([queue], connection=hotline.redis).work(burst=True)
        assert not FailedJobRegistry(queue=queue).get_job_ids()
        assert call_sid not in unfinished(local)
        (ticket,) = hotline.store.find(call_sid=call_sid)
        assert ticket.branch == "payment" and ticket.ended_at is None
    assert not no_unexpected_http.calls


def test_twilio_failing_is_retried_through_rq_and_the_ticket_written_meanwhile(app, client, settle, no_unexpected_http):
    call_sid = sid(5)
    walk_to_payment(client, call_sid)
    no_unexpected_http.add(responses.GET, call_url(call_sid), status=503, json={"code": 20503, "message": "down"})
    assert settle() == 1
    with app.app_context():
        hotline = app.extensions["hotline"]
        queue = Queue(TICKETS_QUEUE, connection=hotline.redis)
        assert not FailedJobRegistry(queue=queue).get_job_ids()
        (retry,) = ScheduledJobRegistry(queue=queue).get_job_ids()  # RQ's retry, in 30 s
        assert queue.fetch_job(retry).args == (call_sid,)
        (ticket,) = hotline.store.find(call_sid=call_sid)  # in progress, while Twilio is away
        assert ticket.outcome == "in_progress"
    assert call_sid in unfinished(app)  # and looked at again later whatever happens to the job


def test_twilio_refusing_for_good_is_logged_and_not_asked_again(app, client, settle, no_unexpected_http, caplog):
    """Bad credentials, a closed account: asking every 15 minutes would not help."""
    call_sid = sid(10)
    walk_to_payment(client, call_sid)
    error = {"code": 20003, "message": "Authenticate", "status": 401}
    no_unexpected_http.add(responses.GET, call_url(call_sid), status=401, json=error)
    assert settle() == 1
    assert call_sid not in unfinished(app)
    with app.app_context():
        hotline = app.extensions["hotline"]
        queue = Queue(TICKETS_QUEUE, connection=hotline.redis)
        assert not FailedJobRegistry(queue=queue).get_job_ids() and not ScheduledJobRegistry(queue=queue).get_job_ids()
        assert hotline.store.find(call_sid=call_sid)[0].branch == "payment"
    assert "Twilio refused the look-up of its end (401, 20003)" in caplog.text


def test_an_ended_call_without_an_end_time_ends_at_its_start_plus_its_duration(
    app, client, settle, ticket_for, no_unexpected_http
):
    """Twilio leaves end_time empty for a call that did not complete (a busy or failed one)."""
    call_sid = sid(11)
    walk_to_payment(client, call_sid)
    no_unexpected_http.add(responses.GET, call_url(call_sid), json=twilio_call(call_sid, "failed", None, "45"))
    assert settle() == 1
    ticket = ticket_for(call_sid)
    assert (ticket["status"], ticket["ended_at"]) == ("failed", (STARTED + timedelta(seconds=45)).isoformat())


def test_a_call_we_placed_is_settled_with_the_customer_as_the_caller(app, client, settle, no_unexpected_http):
    """A callback's call (direction outbound-api): Twilio's `to` is the customer."""
    call_sid = sid(12)
    walk_to_payment(client, call_sid)
    placed = twilio_call(
        call_sid, "completed", STARTED, "60", direction="outbound-api", to="+819087654321", **{"from": "+815012345678"}
    )
    no_unexpected_http.add(responses.GET, call_url(call_sid), json=placed)
    assert settle() == 1
    with app.app_context():
        (end,) = [e for e in app.extensions["hotline"].calls.events(call_sid) if e.get("via") == "twilio_rest"]
    assert (end["caller"], end["called"], end["duration_s"]) == ("+819087654321", "+815012345678", 60)


def test_a_call_still_without_an_end_a_day_on_is_not_asked_about(app, client, clock, settle, no_unexpected_http):
    call_sid = sid(13)
    walk_to_payment(client, call_sid)
    clock.advance(27 * 3600)  # its events a day old (Twilio ends every call within 24 hours)
    assert settle() == 1  # no REST request: any would fail the test
    assert call_sid not in unfinished(app)


def test_a_call_that_ended_normally_is_never_looked_at(app, client, settle, ticket_for):
    call_sid = sid(6)
    walk_to_payment(client, call_sid)
    signed_post(client, "/voice/status", call_form(call_sid, CallStatus="completed", CallDuration="30"))
    assert call_sid not in unfinished(app)
    assert settle(later_s=2 * LOOK_AFTER_S) == 0  # no REST request (any would fail the test)
    assert ticket_for(call_sid)["duration_s"] == 30


def test_a_retried_incoming_keeps_its_time_to_be_looked_at(app, client):
    call_sid = sid(7)
    signed_post(client, "/voice/incoming", call_form(call_sid, CallStatus="ringing"))
    first = unfinished(app)[call_sid]
    signed_post(client, "/voice/incoming", call_form(call_sid, CallStatus="ringing"))  # Twilio's retry
    assert unfinished(app)[call_sid] == first


def test_a_call_whose_final_status_is_in_its_events_is_not_asked_about(app, client, settle, no_unexpected_http):
    """Listed though it ended (its status overtook /voice/incoming, whose script then listed
    it): the job finds the end in the events and asks Twilio nothing."""
    call_sid = sid(8)
    walk_to_payment(client, call_sid)
    signed_post(client, "/voice/status", call_form(call_sid, CallStatus="completed", CallDuration="30"))
    redis = app.extensions["hotline"].redis
    redis.zadd(UNFINISHED_KEY, {call_sid: time.time()})  # as if the ZREM had been lost
    assert settle() == 1
    assert call_sid not in unfinished(app)
    assert not no_unexpected_http.calls


def test_the_worker_dispatcher_looks_at_unfinished_calls(app, client, no_unexpected_http):
    call_sid = sid(9)
    walk_to_payment(client, call_sid)
    redis = app.extensions["hotline"].redis
    redis.zadd(UNFINISHED_KEY, {call_sid: time.time() - 1})  # its time has come
    with app.app_context():
        dispatch_once()
        queued = Queue(TICKETS_QUEUE, connection=redis).jobs
    assert [(job.func_name, job.args) for job in queued][-1] == ("callbacks.tickets.settle_unfinished", (call_sid,))
