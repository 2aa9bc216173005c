"""The agent console's API: token sign-in, availability, the screen pop, and the disposition that
lands on the ticket. (tests/test_agent_console_browser.py drives the page in Chromium.)"""

from __future__ import annotations

import pytest

from ivr.calllog import make_event
from ivr.handlers.agent import agent_token
from tests.conftest import OPS_TOKEN
from tests.twiml import call_form, parse, queue_caller, signed_post

CALLER = "CA" + "f" * 32


def auth(agent_id: str, token: str | None = None) -> dict:
    token = agent_token(OPS_TOKEN, agent_id) if token is None else token
    return {"Authorization": f"Bearer {agent_id}:{token}"}


def connect_call(app, client, clock, agent_id: str = "a101") -> None:
    """A Japanese caller with an earlier ticket walks to payment, waits 3 minutes, and is
    reserved for the agent, who accepts."""
    hotline = app.extensions["hotline"]
    earlier = "CA" + "e" * 32
    hotline.calls.start(earlier, make_event("call", clock.now, event_id="start", caller="+819012345678", called="x"))
    signed_post(client, "/voice/status", call_form(earlier, CallStatus="completed", CallDuration="30"))
    clock.advance(3600)
    signed_post(client, "/voice/incoming", call_form(CALLER))
    signed_post(client, "/voice/language?attempt=1", call_form(CALLER, Digits="1"))
    signed_post(client, "/voice/ja/node/main/choice?attempt=1", call_form(CALLER, Digits="2"))
    queue_caller(client, "/voice/ja/node/payment/choice?attempt=1", call_form(CALLER, Digits="0"))
    clock.advance(180)
    now_ms = int(clock.now.timestamp() * 1000)
    # What the router's match does: out of the line (the seat stays), the agent reserved.
    hotline.routing.redis.zrem("{routing}:waiting:payment:ja", CALLER)
    hotline.routing.set_agent_status(agent_id, "busy", now_ms, call_sid=CALLER)
    hotline.calls.append(CALLER, [make_event("agent_accepted", clock.now, agent=agent_id)])


@pytest.mark.parametrize("token", ["wrong", ""])
def test_a_wrong_token_is_refused(client, token):
    assert client.get("/agent/api/me", headers=auth("a101", token)).status_code == 401
    assert client.get("/agent/api/me").status_code == 401


def test_sign_in_and_availability(client):
    me = client.get("/agent/api/me", headers=auth("a103")).get_json()
    assert (me["id"], me["status"], me["call"]) == ("a103", "offline", None)
    assert client.post("/agent/api/status", json={"status": "available"}, headers=auth("a103")).status_code == 200
    assert client.get("/agent/api/me", headers=auth("a103")).get_json()["status"] == "available"
    assert client.post("/agent/api/status", json={"status": "busy"}, headers=auth("a103")).status_code == 400


def test_screen_pop_shows_why_the_caller_calls(app, client, clock, run_jobs):
    connect_call(app, client, clock)
    run_jobs()  # the earlier call's ticket
    pop = client.get("/agent/api/me", headers=auth("a101")).get_json()["call"]
    assert pop["call_sid"] == CALLER and pop["branch"] == "payment" and pop["language"] == "ja"
    assert pop["path"] == ["language", "main", "payment", "agent_payment"]
    assert pop["waited_s"] == 180 and pop["caller"] == "+819012345678"
    assert [t["outcome"] for t in pop["earlier_tickets"]] == ["hung_up_in_menu"]
    assert str(pop["reference"]).isdigit()


def test_the_disposition_lands_on_the_ticket(app, client, clock, ticket_for):
    connect_call(app, client, clock)
    body = {"call_sid": CALLER, "disposition": "refund_requested", "notes": "double charge at a konbini"}
    no_call = client.post("/agent/api/disposition", json={"disposition": "resolved"}, headers=auth("a101"))
    assert no_call.status_code == 400 and "call_sid is required" in no_call.get_json()["error"]
    assert client.post("/agent/api/disposition", json=body, headers=auth("a102")).status_code == 403
    assert (
        client.post("/agent/api/disposition", json={**body, "disposition": "x"}, headers=auth("a101")).status_code
        == 400
    )
    assert client.post("/agent/api/disposition", json=body, headers=auth("a101")).status_code == 200
    signed_post(client, "/voice/status", call_form(CALLER, CallStatus="completed", CallDuration="600"))
    ticket = ticket_for(CALLER)
    assert (ticket["agent"], ticket["disposition"], ticket["notes"]) == (
        "a101",
        "refund_requested",
        "double charge at a konbini",
    )


def test_the_page_loads(client):
    page = client.get("/agent")
    assert page.status_code == 200 and b"agent console" in page.data and b"refund requested" in page.data


def test_no_status_change_while_on_a_call_so_its_end_is_never_a_missed_call(app, client, clock):
    """Set away or offline mid-call, the agent's hang-up read as 'the agent did not answer' and
    queued the caller again after they had talked."""
    connect_call(app, client, clock)
    ops = {"Authorization": f"Bearer {OPS_TOKEN}"}
    for status in ("offline", "away", "available"):
        mine = client.post("/agent/api/status", headers=auth("a101"), json={"status": status})
        theirs = client.post("/api/agents/a101/status", headers=ops, json={"status": status})
        assert (mine.status_code, theirs.status_code) == (409, 409), status
        assert "on a call" in mine.get_json()["error"] and "force" in theirs.get_json()["error"]
    done = call_form(CALLER, DialCallStatus="completed", DialCallDuration="45")  # no DialBridged
    root = parse(signed_post(client, "/voice/ja/connect/a101/done", done))
    assert [child.tag for child in root] == ["Say", "Hangup"]  # goodbye, not the queue again
    assert app.extensions["hotline"].routing.agents()["a101"][0] == "wrap_up"


def test_a_status_left_stuck_by_a_lost_hang_up_can_be_changed(app, client, clock):
    connect_call(app, client, clock)
    routing = app.extensions["hotline"].routing
    ops = {"Authorization": f"Bearer {OPS_TOKEN}"}
    forced = client.post("/api/agents/a101/status", headers=ops, json={"status": "away", "force": True})
    assert forced.status_code == 200 and routing.agents()["a101"][0] == "away"
    routing.set_agent_status("a101", "busy", 0, call_sid=CALLER)
    routing.mark_gone(CALLER)  # the caller's call is over; its end did not reach the agent's status
    assert client.post("/agent/api/status", headers=auth("a101"), json={"status": "available"}).status_code == 200


def test_a_busy_status_older_than_any_call_holds_no_one(app, client, clock):
    """Both ends of a call lost (Redis was down for them): after the longest a call can last,
    the agent may set their status again without ops."""
    routing = app.extensions["hotline"].routing
    now_ms = int(clock.now.timestamp() * 1000)
    routing.set_agent_status("a101", "busy", now_ms - 3600 * 1000, call_sid="cb:41")
    assert client.post("/agent/api/status", headers=auth("a101"), json={"status": "offline"}).status_code == 409
    routing.set_agent_status("a101", "busy", now_ms - 5 * 3600 * 1000, call_sid="cb:41")
    assert client.post("/agent/api/status", headers=auth("a101"), json={"status": "offline"}).status_code == 200


def test_an_agent_removed_by_a_reload_finishes_the_call_they_hold(make_app, tmp_path, sleeps, clock, ticket_for):
    """Ops take a101 off the roster while they talk to a caller: they still see that call and
    save its wrap-up, and once the wrap-up is over their sign-in ends like any removed agent's."""
    from tests.test_reload_live_state import live_app, publish, shipped

    app, path = live_app(make_app, tmp_path, sleeps)
    client, hotline = app.test_client(), app.extensions["hotline"]
    connect_call(app, client, clock)
    without_a101 = shipped()
    without_a101["agents"] = [a for a in without_a101["agents"] if a["id"] != "a101"]
    publish(app, path, without_a101)

    me = client.get("/agent/api/me", headers=auth("a101")).get_json()
    assert (me["id"], me["on_roster"], me["status"], me["call"]["call_sid"]) == ("a101", False, "busy", CALLER)
    assert client.get("/agent/api/me", headers=auth("a101", "wrong")).status_code == 401
    # Availability is for agents on the roster: a removed one takes no more calls.
    assert client.post("/agent/api/status", json={"status": "available"}, headers=auth("a101")).status_code == 401
    assert client.get("/agent/api/me", headers=auth("a102")).get_json()["on_roster"] is True

    done = call_form(CALLER, DialCallStatus="completed", DialBridged="true", DialCallDuration="300")
    assert [child.tag for child in parse(signed_post(client, "/voice/ja/connect/a101/done", done))] == ["Say", "Hangup"]
    assert hotline.routing.agents()["a101"][0] == "wrap_up"
    body = {"call_sid": CALLER, "disposition": "resolved", "notes": "card re-added"}
    assert client.post("/agent/api/disposition", json=body, headers=auth("a101")).status_code == 200
    assert (ticket_for(CALLER)["disposition"], ticket_for(CALLER)["notes"]) == ("resolved", "card re-added")

    clock.advance(31)
    hotline.routing.end_wrap_ups(30_000, int(clock.now.timestamp() * 1000))
    assert client.get("/agent/api/me", headers=auth("a101")).status_code == 401
    assert client.post("/agent/api/disposition", json=body, headers=auth("a101")).status_code == 401
