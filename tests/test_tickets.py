"""One complete ticket per call, written through RQ, idempotent and order-tolerant, on SQLite
and PostgreSQL; a database outage delays tickets, never calls."""

from __future__ import annotations

import pytest
from rq import Queue, Worker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from ivr.menus.loader import load_config
from ivr.services import TICKETS_QUEUE
from tests.conftest import CLOSED_TIME, OPS_TOKEN, SHIPPED_CONFIG
from tests.twiml import call_form, parse, queue_caller, signed_post

CONFIG = load_config(SHIPPED_CONFIG)
API = {"Authorization": f"Bearer {OPS_TOKEN}"}


@pytest.fixture
def app(make_app, any_database_url):
    return make_app(DATABASE_URL=any_database_url)


def test_complaint_recording_is_read_back_and_on_the_ticket(walker, ticket_for, clock):
    result = walker().dial(["3", "4", "1", "rec:31"])
    ticket = ticket_for(result.call_sid)
    assert str(ticket["id"]) == result.said[-2].text.split("reference ")[1].split(".")[0].replace(" ", "")
    assert ticket["branch"] == "complaint"
    assert ticket["outcome"] == "message_left"
    assert ticket["recordings"] == [
        {
            "url": ticket["recordings"][0]["url"],
            "duration_s": 31,
            "duration": 31,
            "sid": ticket["recordings"][0]["sid"],
            "node": "complaint_merchant",
            "at": ticket["recordings"][0]["at"],
        }
    ]
    assert ticket["recordings"][0]["url"].startswith("https://api.twilio.com/")
    for field in (
        "id",
        "call_sid",
        "caller",
        "called",
        "language",
        "started_at",
        "ended_at",
        "duration_s",
        "path",
        "branch",
        "outcome",
        "recordings",
    ):
        assert ticket[field] not in (None, ""), field
    assert ticket["caller"] == "+819012345678" and ticket["called"] == "+815012345678"


def test_completed_status_before_the_record_action_loses_nothing(walker, ticket_for):
    result = walker(status_before_last_action=True).dial(["3", "4", "2", "hangup"])
    ticket = ticket_for(result.call_sid)
    assert ticket["status"] == "completed"
    assert ticket["outcome"] == "message_left"
    assert ticket["recordings"][0]["node"] == "complaint_service"
    assert [step["node"] for step in ticket["path"]][-1] == "complaint_service"


def test_silent_recording_either_way_twilio_reports_it(walker, ticket_for):
    for mode in ("action", "fallthrough"):
        result = walker(silent_record=mode).dial(["3", "4", "1", "rec:0", "hangup"])
        assert CONFIG.prompts.recording_empty["en"] in result.text()
        assert CONFIG.menu.nodes["complaint"].prompt["en"] in result.text()  # back to the menu
        ticket = ticket_for(result.call_sid)
        assert ticket["recordings"] == [] and ticket["outcome"] == "hung_up_in_menu"


def test_retried_webhooks_and_repeated_jobs_make_one_ticket(app, walker, run_jobs, ticket_for):
    result = walker().dial(["3", "2", "1", None])
    client = app.test_client()
    # Twilio retries the first webhook and the status callback (same form, same signature).
    for url, form in [result.requests[0], result.requests[-1]]:
        path = url.removeprefix("https://hotline.example.com")
        response = signed_post(client, path, form)
        assert response.status_code in (200, 204)
    assert run_jobs() == 1  # marked due twice, dispatched once
    first = ticket_for(result.call_sid)
    hotline = app.extensions["hotline"]
    hotline.request_ticket_sync(result.call_sid)
    second = ticket_for(result.call_sid)
    assert first["path"] == second["path"] and first["id"] == second["id"]
    assert len(client.get("/api/tickets?limit=500", headers=API).get_json()["tickets"]) == 1
    assert [s["node"] for s in first["path"]] == ["language", "main", "payment", "payment_failed"]


def test_a_call_in_progress_has_an_in_progress_ticket_once_synced(app, client, ticket_for):
    sid = "CA" + "5" * 32
    signed_post(client, "/voice/incoming", call_form(sid, CallStatus="ringing"))
    signed_post(client, "/voice/language?attempt=1", call_form(sid, Digits="3"))
    app.extensions["hotline"].request_ticket_sync(sid)  # a sync before the call ends (resync, say)
    ticket = ticket_for(sid)
    assert (ticket["outcome"], ticket["ended_at"], ticket["language"]) == ("in_progress", None, "en")
    signed_post(client, "/voice/status", call_form(sid, CallStatus="completed", CallDuration="20"))
    ticket = ticket_for(sid)
    assert ticket["outcome"] == "hung_up_in_menu" and ticket["duration_s"] == 20


def test_too_many_failed_attempts_on_a_closed_line_is_gave_up(walker, clock, ticket_for):
    clock.now = CLOSED_TIME  # no agent to fall back to: a message and goodbye
    result = walker().dial(["3", "8", "8", "8"])
    assert result.ended == "hangup", result.ended
    assert ticket_for(result.call_sid)["outcome"] == "gave_up"


def test_a_call_that_lost_its_place_is_an_error(client, ticket_for):
    sid = "CA" + "6" * 32
    signed_post(client, "/voice/incoming", call_form(sid, CallStatus="ringing"))
    root = parse(signed_post(client, "/voice/en/node/no_such_node", call_form(sid)))
    assert [s.text for s in root.iter("Say")][0] == CONFIG.prompts.recover["en"]  # an apology, then the menu
    signed_post(client, "/voice/status", call_form(sid, CallStatus="completed"))
    assert ticket_for(sid)["outcome"] == "error"


def test_a_call_that_never_reached_the_menu_is_missed(client, ticket_for):
    sid = "CA" + "7" * 32
    signed_post(client, "/voice/status", call_form(sid, CallStatus="failed"))
    ticket = ticket_for(sid)
    assert ticket["outcome"] == "missed" and ticket["status"] == "failed"


def test_hanging_up_on_hearing_the_wait_before_joining_is_abandoned(walker, ticket_for):
    # Account locked: what to do, then the urgent agent line; nobody is on duty, so the caller
    # hears that before joining, and hangs up.
    result = walker().dial(["3", "1", "3", "hangup"])
    ticket = ticket_for(result.call_sid)
    assert (ticket["outcome"], ticket["branch"], ticket["queue"]) == ("abandoned", "account", None)


def test_hangup_in_the_menu(walker, ticket_for):
    result = walker().dial(["2", "hangup"])
    ticket = ticket_for(result.call_sid)
    assert ticket["outcome"] == "hung_up_in_menu" and ticket["language"] == "zh" and ticket["branch"] == "other"


def test_references_are_distinct_and_six_digits(walker, ticket_for):
    ids = {ticket_for(walker().dial(["3", "hangup"]).call_sid)["id"] for _ in range(3)}
    assert len(ids) == 3 and all(100000 <= i < 1000000 for i in ids)


def test_a_forked_rq_worker_writes_the_ticket(app, walker):
    result = walker().dial(["3", "1", "1", None])
    with app.app_context():
        hotline = app.extensions["hotline"]
        queue = Queue(TICKETS_QUEUE, connection=hotline.redis)
        assert queue.count == 0, "webhooks only mark tickets due; the dispatcher queues the jobs"
        assert hotline.dispatch_due_tickets() == 1
        assert hotline.dispatch_due_tickets() == 0
        assert queue.count == 1
        Worker([queue], connection=hotline.redis).work(burst=True)  # forks a work horse per job
        assert queue.count == 0 and not FailedJobRegistry(queue=queue).get_job_ids()
        tickets = hotline.store.find(call_sid=result.call_sid)
    assert tickets and tickets[0].outcome == "self_service"


def test_database_down_delays_the_ticket_but_not_the_call(make_app, walker, any_database_url, redis_url, clock):
    # No database behind this URL: every webhook must still answer, and the job must be retried.
    down = make_app(DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")
    from ivr.simulator import CallWalker
    from tests.conftest import AUTH_TOKEN, BASE_URL, transport_for

    result = CallWalker(transport_for(down), AUTH_TOKEN, base_url=BASE_URL).dial(["3", "4", "1", "rec:20"])
    assert result.ended == "hangup" and not result.problems
    with down.app_context():
        hotline = down.extensions["hotline"]
        from rq import SimpleWorker

        hotline.dispatch_due_tickets()
        SimpleWorker([TICKETS_QUEUE], connection=hotline.redis).work(burst=True)
        queue = Queue(TICKETS_QUEUE, connection=hotline.redis)
        scheduled = ScheduledJobRegistry(queue=queue).get_job_ids()
        assert scheduled, "the failed ticket write must be scheduled for a retry"
        assert not FailedJobRegistry(queue=queue).get_job_ids()
    # The database is back: the retry writes the complete ticket.
    up = make_app(DATABASE_URL=any_database_url)
    with up.app_context():
        hotline = up.extensions["hotline"]
        queue = Queue(TICKETS_QUEUE, connection=hotline.redis)
        for job_id in ScheduledJobRegistry(queue=queue).get_job_ids():
            queue.enqueue_job(queue.fetch_job(job_id))  # what the scheduler does when the retry is due
        from rq import SimpleWorker

        SimpleWorker([TICKETS_QUEUE], connection=hotline.redis).work(burst=True)
        ticket = hotline.store.find(call_sid=result.call_sid)[0]
    assert ticket.outcome == "message_left" and ticket.recordings[0]["duration_s"] == 20


def test_sensitive_input_is_redacted_on_the_ticket(make_app, tmp_path, ticket_for):
    import yaml

    data = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    data["menu"]["nodes"]["payment"]["sensitive"] = True
    path = tmp_path / "hotline.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    app = make_app(HOTLINE_CONFIG=str(path))
    client = app.test_client()
    sid = "CA" + "b" * 32
    parse(signed_post(client, "/voice/incoming", call_form(sid)))
    parse(signed_post(client, "/voice/en/node/payment/choice?attempt=1", call_form(sid, Digits="3")))
    parse(signed_post(client, "/voice/en/node/payment/choice?attempt=1", call_form(sid, Digits="8")))
    signed_post(client, "/voice/status", call_form(sid, CallStatus="completed", CallDuration="30"))
    from rq import SimpleWorker

    with app.app_context():
        app.extensions["hotline"].dispatch_due_tickets()
        SimpleWorker([TICKETS_QUEUE], connection=app.extensions["hotline"].redis).work(burst=True)
        ticket = app.extensions["hotline"].store.find(call_sid=sid)[0]
    inputs = [i["input"] for step in ticket.path for i in step["inputs"]]
    assert inputs == ["[redacted]", "[redacted]"]


def test_a_call_marked_again_while_dispatching_gets_another_sync(app):
    from callbacks.tickets import DUE_KEY

    hotline = app.extensions["hotline"]
    with hotline.redis.pipeline() as pipe:
        hotline.mark_ticket_due("CA" + "c" * 32, pipe)
        pipe.execute()
    due = hotline.redis.zrange(DUE_KEY, 0, -1, withscores=True)
    with hotline.redis.pipeline() as pipe:  # a late Record action marks it again
        pipe.zadd(DUE_KEY, {"CA" + "c" * 32: due[0][1] + 1})
        pipe.execute()
    from callbacks.tickets import _REMOVE_UNCHANGED

    hotline.redis.eval(_REMOVE_UNCHANGED, 1, DUE_KEY, due[0][0], repr(due[0][1]))
    assert hotline.redis.zcard(DUE_KEY) == 1


def test_the_worker_command_dispatches_and_writes_tickets_in_a_forked_worker(app, walker, any_database_url, redis_url):
    import os
    import subprocess
    import sys

    from tests.conftest import AUTH_TOKEN, ROOT

    result = walker().dial(["3", "2", "3", None])
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": any_database_url,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
    }
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "hotline", "worker", "--burst"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with app.app_context():
        tickets = app.extensions["hotline"].store.find(call_sid=result.call_sid)
    assert tickets and tickets[0].outcome == "self_service"


def test_the_language_menu_records_every_wrong_key_and_silence(walker, ticket_for):
    result = walker().dial(["7", None, "3", "hangup"])
    wrong_then_right = ticket_for(result.call_sid)["path"][0]
    assert wrong_then_right["node"] == "language"
    shown = [(i["input"], i["result"]) for i in wrong_then_right["inputs"]]
    assert shown[:2] == [("7", "invalid_option"), ("-", "no_input")]
    result = walker().dial([None, None, None, "hangup"])  # max_attempts silences: the default language
    silent = ticket_for(result.call_sid)["path"][0]
    assert [(i["input"], i["result"]) for i in silent["inputs"]] == [("-", "no_input")] * 3


def test_two_syncs_of_one_call_at_once_merge_instead_of_failing(any_database_url):
    """The second sync to commit meets the first's rows: it merges again over them (before, it
    failed on the unique constraint and left a traceback for RQ to retry)."""
    from datetime import UTC, datetime

    from sqlalchemy import event

    from ivr.tickets.store import TicketStore

    now = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    events = [
        {"id": "start", "at": now.isoformat(), "kind": "start", "caller": "+819012345678", "called": "+815012345678"},
        {"id": "lang", "at": now.isoformat(), "kind": "language", "lang": "en"},
    ]
    first, other = TicketStore(any_database_url), TicketStore(any_database_url)
    raced = []

    def the_other_sync_commits_first(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith("INSERT INTO TICKET_EVENTS") and not raced:
            raced.append(True)
            other.sync("CA" + "1" * 32, events, 100000, lambda: 100001, now)

    event.listen(first.engine, "before_cursor_execute", the_other_sync_commits_first)
    try:
        ticket = first.sync(
            "CA" + "1" * 32,
            [*events, {"id": "end", "at": now.isoformat(), "kind": "status", "status": "completed"}],
            100000,
            lambda: 100001,
            now,
        )
    finally:
        event.remove(first.engine, "before_cursor_execute", the_other_sync_commits_first)
    assert raced and ticket.id == 100000
    stored = first.get(100000)
    assert stored.call_sid == "CA" + "1" * 32 and stored.language == "en" and stored.ended_at is not None
    first.dispose()
    other.dispose()


def test_long_event_ids_sync_again_and_again_and_two_recordings_without_a_sid_both_stay(client, ticket_for):
    """A Record action with no RecordingSid gives its event a URL-long id; an odd SequenceNumber
    a long one too. Stored cut short, the next sync looked for the uncut id, inserted it again
    and failed on the unique key for good (the ticket stuck in progress)."""
    sid = "CA" + "b" * 32
    signed_post(client, "/voice/incoming", call_form(sid, CallStatus="ringing"))
    signed_post(client, "/voice/language?attempt=1", call_form(sid, Digits="3"))
    signed_post(client, "/voice/en/node/main/choice?attempt=1", call_form(sid, Digits="4"))
    signed_post(client, "/voice/en/node/complaint/choice?attempt=1", call_form(sid, Digits="1"))
    base = "https://api.twilio.com/2010-04-01/Accounts/AC" + "0" * 32 + "/Recordings/RE"
    for n in (1, 2):  # the second as if the caller recorded again: same 80-character prefix
        form = call_form(sid, RecordingUrl=base + str(n) * 32, RecordingDuration="12", Digits="#")
        signed_post(client, "/voice/en/node/complaint_merchant/recorded", form)
    signed_post(client, "/voice/status", call_form(sid, CallStatus="in-progress", SequenceNumber="0" * 90))
    assert ticket_for(sid)["status"] == "in-progress"
    signed_post(client, "/voice/status", call_form(sid, CallStatus="completed", CallDuration="40", SequenceNumber="1"))
    ticket = ticket_for(sid)
    assert (ticket["status"], ticket["outcome"]) == ("completed", "message_left")
    assert [r["url"] for r in ticket["recordings"]] == [base + "1" * 32, base + "2" * 32]


def test_a_caller_id_longer_than_a_phone_number_is_kept_and_an_absurd_one_cut(client, ticket_for):
    """A Voice SDK identity or a SIP URI is longer than any phone number; PostgreSQL refused the
    ticket for good when it did not fit its column."""
    sid, long_sid = "CA" + "f" * 32, "CA" + "e" * 32
    identity = "client:support-desk-kiosk-" + "x" * 60
    signed_post(client, "/voice/incoming", call_form(sid, From=identity, Caller=identity))
    signed_post(client, "/voice/status", call_form(sid, CallStatus="completed", CallDuration="5", From=identity))
    assert ticket_for(sid)["caller"] == identity
    absurd = "sip:" + "a" * 400 + "@example.com"
    signed_post(client, "/voice/incoming", call_form(long_sid, From=absurd))
    signed_post(client, "/voice/status", call_form(long_sid, CallStatus="completed", CallDuration="5", From=absurd))
    assert ticket_for(long_sid)["caller"] == absurd[:255]


def test_each_wait_has_its_own_result_and_a_retried_report_counts_once(client, ticket_for):
    """Left the line for the callback offer, back in it, sent to an agent who missed, back, and
    left again: the last wait's result is the ticket's; Twilio's retry of a report adds nothing."""
    from tests.twiml import queue_caller

    sid = "CA" + "1" * 32
    signed_post(client, "/voice/incoming", call_form(sid))
    signed_post(client, "/voice/language?attempt=1", call_form(sid, Digits="3"))
    queue_caller(client, "/voice/en/node/main/choice?attempt=1", call_form(sid, Digits="0"))
    for n, (result, waited) in enumerate([("leave", "30"), ("redirected", "40"), ("leave", "50")]):
        form = call_form(sid, QueueResult=result, QueueTime=waited)
        for _ in range(2):  # Twilio retries with the same token
            signed_post(client, "/voice/en/node/agent/queued", form, headers={"I-Twilio-Idempotency-Token": f"t{n}"})
    signed_post(client, "/voice/status", call_form(sid, CallStatus="completed", CallDuration="200"))
    ticket = ticket_for(sid)
    assert ticket["queue"]["result"] == "leave"
    from sqlalchemy import select

    from ivr.tickets.models import TicketEvent

    store = client.application.extensions["hotline"].store
    with store.session() as session:
        kept = session.scalars(
            select(TicketEvent).where(TicketEvent.call_sid == sid, TicketEvent.kind == "queue_result")
        ).all()
        assert [row.data["result"] for row in kept] == ["leave", "redirected", "leave"]


def test_a_webhook_twilio_retries_is_on_the_path_once(client, ticket_for):
    """Twilio retries a webhook that timed out with the same I-Twilio-Idempotency-Token: the
    retry's input and visit must not show twice (both attempts' TwiML was the same)."""
    sid = "CA" + "8" * 32
    signed_post(client, "/voice/incoming", call_form(sid, CallStatus="ringing"))
    for attempt, key in ((1, "7"), (2, "3")):
        for _ in range(2):  # the webhook and Twilio's retry of it
            retry = {"I-Twilio-Idempotency-Token": f"t-{attempt}"}
            signed_post(client, f"/voice/language?attempt={attempt}", call_form(sid, Digits=key), headers=retry)
    signed_post(client, "/voice/status", call_form(sid, CallStatus="completed", CallDuration="20"))
    path = ticket_for(sid)["path"]
    assert [(step["node"], [(i["input"], i["result"]) for i in step["inputs"]]) for step in path] == [
        ("language", [("7", "invalid_option"), ("3", "choice")]),
        ("main", []),
    ]


def test_the_same_key_twice_without_a_retry_token_is_two_inputs(client, ticket_for):
    """Without the header (the other reading: a caller really pressed 7 twice), nothing is merged."""
    sid = "CA" + "9" * 32
    signed_post(client, "/voice/incoming", call_form(sid, CallStatus="ringing"))
    signed_post(
        client, "/voice/language?attempt=1", call_form(sid, Digits="7"), headers={"I-Twilio-Idempotency-Token": "t-1"}
    )
    signed_post(client, "/voice/language?attempt=2", call_form(sid, Digits="7"))
    signed_post(client, "/voice/language?attempt=3", call_form(sid, Digits="7"))
    signed_post(client, "/voice/status", call_form(sid, CallStatus="completed", CallDuration="20"))
    (language,) = [step for step in ticket_for(sid)["path"] if step["node"] == "language"]
    assert [i["input"] for i in language["inputs"]] == ["7", "7", "7"]


def test_a_caller_waiting_in_line_has_an_in_progress_ticket(client, ticket_for):
    """Ops can look a waiting caller up while they wait, not only after the call."""
    sid = "CA" + "a1" * 16
    signed_post(client, "/voice/incoming", call_form(sid, CallStatus="ringing"))
    signed_post(client, "/voice/language?attempt=1", call_form(sid, Digits="3"))
    root = queue_caller(client, "/voice/en/node/main/choice?attempt=1", call_form(sid, Digits="0"))
    assert root.find("Enqueue") is not None
    ticket = ticket_for(sid)
    assert (ticket["outcome"], ticket["ended_at"], ticket["branch"]) == ("in_progress", None, "agent")
    assert ticket["queue"]["queue"] == "general"
