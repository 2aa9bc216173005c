"""Agent-first callback dialling: the reserved agent is called first, hears the callback whisper,
accepts, and their call dials the customer (machine detection on the customer's leg)."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest

from ivr.queues.callbacks import member
from tests.conftest import BASE_URL
from tests.test_agent_console import auth
from tests.test_callbacks import (
    CONFIG,
    HOTLINE_NUMBER,
    PROMPTS,
    app_with_callbacks,
    book_with_caller_id,
    dials,
    expect_dial,
    now_ms,
    out_sid,
    run_due_scheduled,
    run_routing,
    scheduled_times,
    texts,
    the_callback,
)
from tests.twiml import call_form, parse, signed_post, verbs


@pytest.fixture
def app(request, make_app, tmp_path, sleeps):
    more = getattr(request, "param", {})  # other callbacks settings, by indirect parametrization
    return app_with_callbacks(make_app, tmp_path, sleeps, dial_mode="agent_first", **more)


@pytest.fixture
def dialling(app, client, clock, hotline, no_unexpected_http):
    """A booked callback, Emma (a103) available; the router reserves her and the job calls her."""
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    clock.advance(180)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    expect_dial(no_unexpected_http, 1)
    run_routing(app)
    return callback


def agent_leg(**extra) -> dict:
    return call_form(out_sid(1), From=HOTLINE_NUMBER, To="client:emma", Direction="outbound-api", **extra)


def test_the_agent_is_called_first_then_the_customer(app, client, hotline, dialling, no_unexpected_http, ticket_for):
    cb = f"/voice/callback/{dialling.id}/1"
    [dial] = dials(no_unexpected_http)
    assert (dial["To"], dial["Url"], dial["StatusCallback"], dial["Timeout"]) == (
        ["client:emma"],
        [f"{BASE_URL}{cb}/agent"],
        [f"{BASE_URL}{cb}/agent/status"],
        ["20"],  # the agent's ring time
    )
    assert "MachineDetection" not in dial  # detected on the customer's leg instead

    root = parse(signed_post(client, f"{cb}/agent", agent_leg()))
    assert verbs(root) == ["Gather", "Hangup"]
    assert texts(root)[0].startswith("Callback: payment request in English, booked 3 minutes ago, ticket ")
    root = parse(signed_post(client, f"{cb}/agent/accept", agent_leg(Digits="1")))
    assert verbs(root) == ["Say", "Dial"] and hotline.routing.agents()["a103"][0] == "busy"
    dial_verb = root.find("Dial")
    assert dial_verb.get("callerId") == HOTLINE_NUMBER and dial_verb.get("action") == f"{cb}/agent/done"
    number = dial_verb.find("Number")
    assert number.text == "+819012345678"
    assert (number.get("url"), number.get("machineDetection")) == (f"{cb}/intro", "Enable")

    customer = call_form("CA" + "c" * 32, ParentCallSid=out_sid(1), AnsweredBy="human")
    root = parse(signed_post(client, f"{cb}/intro", customer))
    assert verbs(root) == ["Say"] and "returning your call to our payment line" in texts(root)[0]
    done = agent_leg(DialCallStatus="completed", DialBridged="true", DialCallDuration="300")
    assert verbs(parse(signed_post(client, f"{cb}/agent/done", done))) == ["Hangup"]
    assert hotline.callbacks.get(dialling.id).status == "done"
    assert hotline.routing.agents()["a103"][0] == "wrap_up"
    signed_post(client, f"{cb}/agent/status", agent_leg(CallStatus="completed"))
    assert hotline.routing.agents()["a103"][0] == "wrap_up"
    # In wrap-up the screen pop still shows the callback, and its disposition is accepted: onto
    # the ticket of the call that asked (no call of ours has the pop's `cb:` sid).
    pop = client.get("/agent/api/me", headers=auth("a103")).get_json()["call"]
    assert pop["call_sid"] == member(dialling.id) and pop["reference"] == dialling.reference
    assert pop["callback"]["id"] == dialling.id and pop["branch"] == "payment"
    body = {"call_sid": pop["call_sid"], "disposition": "resolved", "notes": "refund explained"}
    assert client.post("/agent/api/disposition", json=body, headers=auth("a101")).status_code == 403
    assert client.post("/agent/api/disposition", json=body, headers=auth("a103")).status_code == 200

    signed_post(client, "/voice/status", call_form("CA" + "0" * 31 + "1", CallStatus="completed"))
    asked = ticket_for("CA" + "0" * 31 + "1")
    assert (asked["disposition"], asked["notes"]) == ("resolved", "refund explained")
    block = asked["callback"]
    assert block["status"] == "done" and [a["result"] for a in block["attempts"]] == ["connected"]
    assert block["agent"] == "a103"  # on the line when the customer was connected


def test_a_machine_on_the_customers_leg_is_a_failed_attempt(app, client, clock, hotline, dialling):
    cb = f"/voice/callback/{dialling.id}/1"
    parse(signed_post(client, f"{cb}/agent", agent_leg()))
    parse(signed_post(client, f"{cb}/agent/accept", agent_leg(Digits="1")))
    machine = call_form("CA" + "c" * 32, ParentCallSid=out_sid(1), AnsweredBy="machine_end_beep")
    assert verbs(parse(signed_post(client, f"{cb}/intro", machine))) == ["Hangup"]
    done = agent_leg(DialCallStatus="completed", DialCallSid="CA" + "c" * 32)
    root = parse(signed_post(client, f"{cb}/agent/done", done))
    assert texts(root) == [PROMPTS.callback_customer_missed["en"]]
    current = hotline.callbacks.get(dialling.id)
    assert current.status == "scheduled" and current.attempts[0]["result"] == "machine"
    assert hotline.routing.agents()["a103"][0] == "available"
    assert len(scheduled_times(app)) == 1


@pytest.mark.parametrize("app", [{"attempts": 1}], indirect=True)
def test_the_agent_hears_when_a_missed_customer_was_the_last_attempt(app, client, hotline, dialling):
    cb = f"/voice/callback/{dialling.id}/1"
    parse(signed_post(client, f"{cb}/agent", agent_leg()))
    parse(signed_post(client, f"{cb}/agent/accept", agent_leg(Digits="1")))
    done = agent_leg(DialCallStatus="no-answer", DialCallSid="CA" + "c" * 32)
    root = parse(signed_post(client, f"{cb}/agent/done", done))
    assert texts(root) == [PROMPTS.callback_customer_missed_last["en"]] and verbs(root) == ["Say", "Hangup"]
    assert hotline.callbacks.get(dialling.id).status == "failed"


def test_an_agent_who_does_not_answer_is_set_away_and_the_callback_keeps_its_place(
    app, client, clock, hotline, dialling, no_unexpected_http
):
    cb = f"/voice/callback/{dialling.id}/1"
    signed_post(client, f"{cb}/agent/status", agent_leg(CallStatus="no-answer"))
    assert hotline.routing.agents()["a103"][0] == "away"
    current = hotline.callbacks.get(dialling.id)
    assert current.status == "pending" and current.attempts[0]["result"] == "agent_missed"
    assert hotline.callbacks.position(current) == 1
    # Not counted against the customer: the next agent gets attempt 2, of 3.
    hotline.routing.set_agent_status("a101", "available", now_ms(clock))
    expect_dial(no_unexpected_http, 2)
    run_routing(app)
    assert parse_qs(no_unexpected_http.calls[-1].request.body)["To"] == ["client:sato"]
    assert [a["n"] for a in hotline.callbacks.get(dialling.id).attempts] == [1, 2]


def test_the_agents_completed_status_before_the_dial_action_still_counts_the_talk(app, client, hotline, dialling):
    cb = f"/voice/callback/{dialling.id}/1"
    parse(signed_post(client, f"{cb}/agent", agent_leg()))
    parse(signed_post(client, f"{cb}/agent/accept", agent_leg(Digits="1")))
    customer = call_form("CA" + "c" * 32, ParentCallSid=out_sid(1), AnsweredBy="human")
    parse(signed_post(client, f"{cb}/intro", customer))
    signed_post(client, f"{cb}/agent/status", agent_leg(CallStatus="completed"))  # overtakes the action
    assert hotline.callbacks.get(dialling.id).status == "done"
    assert hotline.routing.agents()["a103"][0] == "wrap_up"
    done = agent_leg(DialCallStatus="completed", DialBridged="true", DialCallDuration="300")
    assert verbs(parse(signed_post(client, f"{cb}/agent/done", done))) == ["Hangup"]
    assert hotline.callbacks.get(dialling.id).attempts[0]["result"] == "connected"


@pytest.mark.parametrize("action_first", [True, False])
def test_an_agent_hanging_up_while_the_customers_phone_rings_is_not_counted_against_the_customer(
    app, client, clock, hotline, dialling, no_unexpected_http, action_first
):
    """Whichever of Twilio's two reports comes first — the Dial's action (the Dial cancelled,
    the agent's call over) or the agent's call status — the attempt is our side's miss: the
    callback keeps its place and all its attempts."""
    cb = f"/voice/callback/{dialling.id}/1"
    parse(signed_post(client, f"{cb}/agent", agent_leg()))
    parse(signed_post(client, f"{cb}/agent/accept", agent_leg(Digits="1")))
    action = agent_leg(CallStatus="completed", DialCallStatus="canceled", DialCallSid="CA" + "c" * 32)
    status = agent_leg(CallStatus="completed")
    for path, form in [(f"{cb}/agent/done", action), (f"{cb}/agent/status", status)][:: 1 if action_first else -1]:
        signed_post(client, path, form)
    current = hotline.callbacks.get(dialling.id)
    assert [a["result"] for a in current.attempts] == ["agent_hung_up"]
    # Its place kept, after a minute (the customer's phone has just rung).
    assert current.status == "scheduled" and current.scheduled_ms == now_ms(clock) + 60_000
    assert hotline.routing.agents()["a103"][0] == "available"
    clock.advance(60)
    assert run_due_scheduled(app, clock) == 1
    assert hotline.callbacks.position(hotline.callbacks.get(dialling.id)) == 1


@pytest.mark.parametrize(("cancel", "said"), [(False, "callback_not_now"), (True, "callback_cancelled")])
def test_a_customer_answering_after_the_attempt_was_given_up_hears_where_it_stands(
    app, client, hotline, dialling, cancel, said
):
    """The agent accepted, then the attempt was given up (released, or cancelled by ops) before
    the customer picked up: they hear that the callback stands (or was cancelled), not silence
    and not 'our phone system has a problem'."""
    cb = f"/voice/callback/{dialling.id}/1"
    parse(signed_post(client, f"{cb}/agent", agent_leg()))
    parse(signed_post(client, f"{cb}/agent/accept", agent_leg(Digits="1")))
    with app.app_context():
        hotline.callback_desk().attempt_over(dialling.id, 1, "released")
        if cancel:
            assert hotline.callback_desk().cancel(dialling.id, "ops") == "cancelled"
    customer = call_form("CA" + "c" * 32, ParentCallSid=out_sid(1), AnsweredBy="human")
    root = parse(signed_post(client, f"{cb}/intro", customer))
    hello = PROMPTS.callback_this_is["en"].format(hotline=CONFIG.name_in("en"))
    where = getattr(PROMPTS, said)["en"].format(reference=" ".join(str(dialling.reference)))
    assert texts(root) == [hello, where, PROMPTS.callback_goodbye["en"]]
    assert verbs(root)[-1] == "Hangup"
