"""Odd input that a signed request can still carry, and dependencies failing under the APIs:
numbers that are not numbers, JSON that is not an object, tokens that are not ASCII, paths that
are percent-encoded, Redis down behind the ops API, the agent console and the hold loop. The
answer is always a clear 4xx/503 or TwiML that keeps the caller where they were, never a 500,
and one odd field never costs the rest of a webhook (a recording, a released seat)."""

from __future__ import annotations

import pytest
from twilio.request_validator import RequestValidator

from ivr.formvalues import MOST_SECONDS, bounded_int, whole_seconds
from ivr.handlers.agent import agent_token
from ivr.localredis import free_port
from ivr.menus.loader import load_config
from ivr.queues.callbacks import record_key
from ivr.queues.state import caller_key
from tests.conftest import AUTH_TOKEN, BASE_URL, OPS_TOKEN, SHIPPED_CONFIG
from tests.test_agent_console import CALLER, auth, connect_call
from tests.twiml import call_form, parse, queue_caller, says, signed_post, verbs

CONFIG = load_config(SHIPPED_CONFIG)
API = {"Authorization": f"Bearer {OPS_TOKEN}"}
HUGE = ["inf", "1e400", "9" * 400, "Infinity"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("12", 12), ("12.7", 12), ("-3", 0), ("", 0), (None, 0), ("x", 0), ("nan", 0), ("-inf", 0)]
    + [(h, MOST_SECONDS) for h in HUGE],
)
def test_durations_from_forms_are_bounded_whole_seconds(raw, expected):
    assert whole_seconds(raw) == expected
    assert bounded_int(raw, 5) == min(expected, 5)


@pytest.mark.parametrize("duration", HUGE)
def test_a_recording_with_an_absurd_duration_still_lands_on_its_ticket(client, ticket_for, duration):
    sid = "CA" + "1" * 32
    signed_post(client, "/voice/incoming", call_form(sid))
    form = call_form(
        sid, RecordingUrl="https://api.twilio.com/rec/RE9", RecordingDuration=duration, RecordingSid="RE" + "9" * 32
    )
    root = parse(signed_post(client, "/voice/en/node/complaint_merchant/recorded", form))
    assert verbs(root)[-1] == "Hangup"  # the confirmation, not the "something went wrong" recovery
    assert CONFIG.prompts.recover["en"] not in [s.text for s in says(root)]
    ticket = ticket_for(sid)
    assert [(r["url"], r["duration"]) for r in ticket["recordings"]] == [
        ("https://api.twilio.com/rec/RE9", MOST_SECONDS)
    ]


def test_a_hang_up_with_absurd_numbers_still_releases_the_seat(app, client):
    routing = app.extensions["hotline"].routing
    sid = "CA" + "2" * 32
    queue_caller(client, "/voice/en/node/agent", call_form(sid))
    assert routing.seat(sid) is not None
    form = call_form(sid, CallStatus="completed", CallDuration="inf", SequenceNumber="1e400")
    response = signed_post(client, "/voice/status", form)
    assert response.status_code == 204
    assert routing.seat(sid) is None


def test_a_queue_hang_up_with_an_absurd_queue_time_still_releases_the_seat(app, client):
    routing = app.extensions["hotline"].routing
    sid = "CA" + "3" * 32
    queue_caller(client, "/voice/en/node/agent", call_form(sid))
    form = call_form(sid, CallStatus="completed", QueueResult="hangup", QueueTime="9" * 400)
    assert signed_post(client, "/voice/en/node/agent/queued", form).status_code == 200
    assert routing.seat(sid) is None


def test_an_agent_call_with_an_absurd_duration_still_ends_with_goodbye_and_wrap_up(app, client, clock):
    connect_call(app, client, clock)
    routing = app.extensions["hotline"].routing
    form = call_form(CALLER, DialBridged="true", DialCallStatus="completed", DialCallDuration="1e400")
    root = parse(signed_post(client, "/voice/ja/connect/a101/done", form))
    assert verbs(root)[-1] == "Hangup"
    assert routing.seat(CALLER) is None
    assert routing.agents()["a101"][0] == "wrap_up"


# ----- the ops API and the agent console ------------------------------------------------------


# Superscript two, Arabic three, fullwidth one; and more digits than int() reads.
@pytest.mark.parametrize("limit", ["\u00b2", "\u0663", "\uff11", "9" * 5000])
def test_a_limit_of_non_ascii_digits_is_400(client, limit):
    for path in ("/api/tickets", "/api/callbacks"):
        response = client.get(path, query_string={"limit": limit}, headers=API)
        assert response.status_code == 400 and "limit" in response.get_json()["error"]


def test_a_ticket_id_beyond_any_database_integer_is_a_json_404(client):
    response = client.get("/api/tickets/99999999999999999999", headers=API)
    assert response.status_code == 404 and "error" in response.get_json()


@pytest.mark.parametrize("body", ["[1]", '"available"', "1", "null"])
def test_json_that_is_not_an_object_is_400_or_ignored_never_500(client, body):
    kinds = {"content_type": "application/json", "data": body}
    ops = client.post("/api/agents/a101/status", headers=API, **kinds)
    status = client.post("/agent/api/status", headers=auth("a101"), **kinds)
    wrap_up = client.post("/agent/api/disposition", headers=auth("a101"), **kinds)
    for response in (ops, status, wrap_up):
        assert response.status_code == 400, response.get_data(as_text=True)
        assert response.get_json()["error"]


@pytest.mark.parametrize("token", ["\u65e5\u672c", "caf\u00e9", agent_token(OPS_TOKEN, "a101") + "\u00e9"])
def test_a_non_ascii_agent_token_is_401(client, token):
    for method, path in (("get", "/agent/api/me"), ("post", "/agent/api/status"), ("post", "/agent/api/disposition")):
        response = getattr(client, method)(path, headers=auth("a101", token), json={})
        assert response.status_code == 401, (path, response.status_code)


def test_with_redis_down_the_apis_answer_503_in_json(make_app):
    client = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").test_client()
    calls = [
        ("get", "/api/agents", API),
        ("get", "/api/queues", API),
        ("get", "/api/callbacks", API),
        ("post", "/api/agents/a101/status", API),
        ("post", "/api/callbacks/1/cancel", API),
        ("get", "/agent/api/me", auth("a101")),
        ("post", "/agent/api/status", auth("a101")),
    ]
    for method, path, headers in calls:
        response = getattr(client, method)(path, headers=headers, json={"status": "available"})
        assert response.status_code == 503, (path, response.status_code)
        assert "Redis" in response.get_json()["error"]
    assert client.get("/api/tickets", headers=API).status_code == 200  # the ticket store still answers


# ----- the voice webhooks -----------------------------------------------------------------------


@pytest.mark.parametrize("node", ["%E6%97%A5", "a%20b"])
def test_a_percent_encoded_path_is_checked_against_the_url_as_requested(client, node):
    """Twilio signs the URL as it requests it, percent-encoding and all; the WSGI path is
    decoded. The unknown node then recovers to the main menu."""
    root = parse(signed_post(client, f"/voice/ja/node/{node}", call_form()))
    assert root.find("Redirect") is not None or root.find("Gather") is not None


def _post_signed_for(client, path: str, signed_path: str):
    form = call_form()
    signature = RequestValidator(AUTH_TOKEN).compute_signature(BASE_URL + signed_path, form)
    return client.post(path, data=form, headers={"X-Twilio-Signature": signature}, base_url=BASE_URL)


def test_a_non_ascii_path_signed_unencoded_passes_too(client):
    """The other reading of a URL configured with raw non-ASCII characters."""
    assert _post_signed_for(client, "/voice/ja/node/%E6%97%A5", "/voice/ja/node/\u65e5").status_code == 200
    assert _post_signed_for(client, "/voice/ja/node/%E6%97%A5", "/voice/ja/node/other").status_code == 403


def test_a_signature_for_one_path_never_passes_for_another_that_decodes_to_it(client):
    """`%252F` decodes to `%2F`, the wire form of another URL: that URL's signature is refused."""
    assert _post_signed_for(client, "/voice/ja/node/a%252Fb", "/voice/ja/node/a%2Fb").status_code == 403
    assert _post_signed_for(client, "/voice/ja/node/a%20b", "/voice/ja/node/a b").status_code == 403


@pytest.mark.parametrize("signature", ["\u00e9", "abc\u00ff=", "\u65e5\u672c"])
def test_a_non_ascii_signature_is_403_and_touches_nothing(app, client, signature):
    sid = "CA" + "6" * 32
    response = client.post(
        "/voice/incoming", data=call_form(sid), headers={"X-Twilio-Signature": signature}, base_url=BASE_URL
    )
    assert response.status_code == 403
    assert app.extensions["hotline"].redis.keys("call:*") == []


def test_the_callback_key_on_hold_with_redis_down_keeps_the_caller_holding(make_app):
    client = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").test_client()
    root = parse(signed_post(client, "/voice/en/hold/payment/key", call_form(Digits=CONFIG.callbacks.key)))
    assert [s.text for s in says(root)] == [CONFIG.prompts.callback_unavailable["en"]]
    # No Leave and no Redirect: the document ends, and Twilio runs the waitUrl again.
    assert verbs(root) == ["Say"]


def test_a_failing_hold_turn_keeps_the_caller_in_the_queue(app, client):
    sid = "CA" + "4" * 32
    queue_caller(client, "/voice/en/node/agent", call_form(sid))
    corrupted = {"arrived_ms": "not-a-number", "announced": "{not json"}
    app.extensions["hotline"].redis.hset(caller_key(sid), mapping=corrupted)
    for path in ("/voice/en/hold/general", "/voice/en/hold/general/key"):
        root = parse(signed_post(client, path, call_form(sid, Digits=CONFIG.callbacks.key)))
        assert "Redirect" not in verbs(root) and "Leave" not in verbs(root), path
        assert says(root)[0].text == CONFIG.prompts.hold["en"]
        assert verbs(root)[-1] in ("Pause", "Play")


def test_a_failing_status_callback_still_answers_204(app, client):
    app.extensions["hotline"].redis.hset(record_key("77"), "id", "77")  # a record missing its fields
    form = call_form("CA" + "5" * 32, CallStatus="completed", Direction="outbound-api")
    for path in ("/voice/callback/77/1/status", "/voice/callback/77/1/agent/status"):
        assert signed_post(client, path, form).status_code == 204, path


def test_after_a_conversation_with_redis_down_the_caller_still_hears_goodbye(make_app):
    client = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").test_client()
    form = call_form(DialBridged="true", DialCallStatus="completed", DialCallDuration="200")
    root = parse(signed_post(client, "/voice/en/connect/a101/done", form))
    assert [s.text for s in says(root)] == [CONFIG.prompts.goodbye["en"]]
    assert verbs(root)[-1] == "Hangup"
