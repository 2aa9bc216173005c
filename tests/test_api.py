"""The ops API: bearer token, ticket queries, clear errors."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import OPS_TOKEN
from tests.twiml import call_form, queue_caller, signed_post

API = {"Authorization": f"Bearer {OPS_TOKEN}"}

# The queries are SQL: every test here runs on SQLite and on PostgreSQL (TEST_DATABASE_URL).
pytestmark = pytest.mark.any_database


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": OPS_TOKEN}])
def test_no_or_wrong_token_is_401(client, headers):
    response = client.get("/api/tickets", headers=headers)
    assert response.status_code == 401
    assert "Bearer" in response.get_json()["error"]


def test_api_is_closed_when_no_token_is_configured(make_app):
    client = make_app(OPS_API_TOKEN=None).test_client()
    assert client.get("/api/tickets", headers={"Authorization": "Bearer "}).status_code == 401


def test_query_by_call_sid_caller_and_since(app, walker, run_jobs, clock):
    first = walker(caller="+819011112222").dial(["3", "hangup"])
    clock.advance(3600)
    second = walker(caller="+819033334444").dial(["1", "hangup"])
    run_jobs()
    client = app.test_client()

    def ids(query: str) -> list[str]:
        response = client.get(f"/api/tickets{query}", headers=API)
        assert response.status_code == 200
        return [t["call_sid"] for t in response.get_json()["tickets"]]

    assert ids("") == [second.call_sid, first.call_sid]
    assert ids(f"?call_sid={first.call_sid}") == [first.call_sid]
    assert ids("?caller=%2B819033334444") == [second.call_sid]
    assert ids("?caller=090-3333-4444") == [second.call_sid]  # national format, hotline's country
    since = clock.now.isoformat().replace("+00:00", "Z")
    assert ids(f"?since={since}") == [second.call_sid]
    # The same instant in Tokyo time (+09:00): the offset counts (SQLite keeps times without one).
    tokyo = clock.now.astimezone(ZoneInfo("Asia/Tokyo")).isoformat()
    assert ids("?since=" + quote(tokyo)) == [second.call_sid]
    an_hour_before = (clock.now - timedelta(seconds=3601)).astimezone(ZoneInfo("Asia/Tokyo")).isoformat()
    assert ids("?since=" + quote(an_hour_before)) == [second.call_sid, first.call_sid]
    # Without a zone: the hotline's (Tokyo) clock, as ops read it.
    naive_tokyo = clock.now.astimezone(ZoneInfo("Asia/Tokyo")).replace(tzinfo=None).isoformat()
    assert ids("?since=" + quote(naive_tokyo)) == [second.call_sid]
    # The offset's '+' pasted into curl unencoded arrives as a space: still the offset meant.
    assert ids("?since=" + tokyo) == [second.call_sid]
    assert ids("?since=" + an_hour_before) == [second.call_sid, first.call_sid]
    ticket = client.get(f"/api/tickets?call_sid={second.call_sid}", headers=API).get_json()["tickets"][0]
    by_id = client.get(f"/api/tickets/{ticket['id']}", headers=API)
    assert by_id.status_code == 200 and by_id.get_json() == ticket
    assert ticket["language"] == "ja"


@pytest.mark.parametrize("query", ["?since=yesterday", "?limit=0", "?limit=abc", "?limit=100000", "?calller=1"])
def test_bad_query_is_400_with_a_reason(client, query):
    response = client.get(f"/api/tickets{query}", headers=API)
    assert response.status_code == 400
    assert response.get_json()["error"]


def test_a_mistyped_filter_is_refused_not_ignored(client):
    """`?calller=…` answering every ticket would look like the caller's history."""
    for path, known in (("/api/tickets?calller=%2B81", "call_sid, caller"), ("/api/callbacks?stauts=done", "status")):
        response = client.get(path, headers=API)
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert error.startswith("unknown parameter(s) ") and known in error, error


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/api/tickets?call_sid=", "call_sid"),
        ("/api/tickets?caller=%20", "caller"),
        ("/api/tickets?since=", "since"),
        ("/api/callbacks?status=", "status"),
        ("/api/callbacks?queue=", "queue"),
    ],
)
def test_an_empty_filter_is_refused_not_read_as_any(client, path, name):
    """`?call_sid=$SID` with SID unset must not answer with the newest tickets of other calls."""
    response = client.get(path, headers=API)
    assert response.status_code == 400
    assert response.get_json()["error"] == f"empty parameter(s) {name}: give a value or leave it out"


def test_a_filter_given_twice_is_refused_not_read_as_its_first_value(client):
    for path, name in (
        ("/api/callbacks?status=done&status=failed", "status"),
        ("/api/tickets?caller=1&caller=2", "caller"),
    ):
        response = client.get(path, headers=API)
        assert response.status_code == 400
        assert response.get_json()["error"] == f"parameter(s) {name} given more than once: one value each"


def test_unknown_ticket_is_404(client):
    response = client.get("/api/tickets/999999", headers=API)
    assert response.status_code == 404 and "999999" in response.get_json()["error"]
    for odd in ("abc", "１２３", "-1", str(2**64)):  # not a ticket id, said as such
        response = client.get(f"/api/tickets/{odd}", headers=API)
        assert response.status_code == 404 and response.get_json()["error"].startswith("no ticket"), odd
    assert "a ticket id is a number" in client.get("/api/tickets/abc", headers=API).get_json()["error"]


def test_an_unknown_api_url_is_a_json_404_and_other_urls_keep_their_own(client):
    for url in ("/api/tickets/1/more", "/api/nothing-here"):
        response = client.get(url, headers=API)
        assert response.status_code == 404 and response.is_json
        assert response.get_json()["error"] == f"no such endpoint: GET {url}"
    response = client.delete("/api/tickets", headers=API)
    assert response.status_code == 405 and response.is_json
    assert client.get("/nowhere").status_code == 404 and not client.get("/nowhere").is_json


def test_database_down_is_503_not_500(make_app):
    app = make_app(DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1")
    response = app.test_client().get("/api/tickets", headers=API)
    assert response.status_code == 503
    assert "unavailable" in response.get_json()["error"]


def test_healthz_needs_no_token_and_reports_dependencies(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok" and body["redis"] == "ok" and body["database"] == "ok"


def test_status_callback_answers_204(client):
    response = signed_post(
        client, "/voice/status", call_form(CallStatus="completed", CallDuration="12", SequenceNumber="3")
    )
    assert response.status_code == 204


def test_agents_set_their_status_and_queues_show_live_state(app, client, clock):
    assert {a["id"]: a["status"] for a in client.get("/api/agents", headers=API).get_json()["agents"]} == {
        "a101": "offline",
        "a102": "offline",
        "a103": "offline",
        "a201": "offline",
    }
    response = client.post("/api/agents/a103/status", json={"status": "available"}, headers=API)
    assert response.status_code == 200
    assert client.post("/api/agents/a103/status", json={"status": "busy"}, headers=API).status_code == 400
    assert client.post("/api/agents/nobody/status", json={"status": "away"}, headers=API).status_code == 404
    assert client.post("/api/agents/a103/status", json={"status": "away"}).status_code == 401
    # `curl -d '{"status":"away"}'` without a JSON content type: told so, not "status must be …".
    for content_type in ("application/x-www-form-urlencoded", None):  # curl -d; no type at all
        as_form = client.post(
            "/api/agents/a103/status", data='{"status": "away"}', headers=API, content_type=content_type
        )
        assert as_form.status_code == 400 and "Content-Type: application/json" in as_form.get_json()["error"]
    forced = client.post("/api/agents/a103/status", json={"status": "away", "force": "yes"}, headers=API)
    assert forced.status_code == 400 and '"force"' in forced.get_json()["error"]
    for n in range(2):
        clock.advance(30)
        form = call_form(f"CA{n:032x}", Digits="0")
        queue_caller(client, "/voice/en/node/payment/choice?attempt=1", form)
    clock.advance(60)
    queues = {q["queue"]: q for q in client.get("/api/queues", headers=API).get_json()["queues"]}
    assert queues["payment"]["waiting"] == 2 and queues["payment"]["waiting_by_language"]["en"] == 2
    assert queues["payment"]["longest_wait_s"] == 90
    assert queues["payment"]["agents_staffed"] == 1 and queues["payment"]["agents_busy"] == 0
    estimate = queues["payment"]["estimate_for_a_new_caller"]
    assert estimate["en"]["status"] == "wait" and estimate["en"]["lo_s"] < estimate["en"]["hi_s"]
    assert estimate["zh"]["status"] == "no_agents" and estimate["zh"]["spoken"]["kind"] == "unknown"
    agents = {a["id"]: a for a in client.get("/api/agents", headers=API).get_json()["agents"]}
    assert agents["a103"]["status"] == "available" and agents["a103"]["since"]
