"""Callers reach agents: reservation, the REST redirect (Twilio faked at HTTP), the whisper and
accept key, wrap-up; and an agent who doesn't answer is set away while the caller keeps their
place."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
import responses
from rq import Queue, SimpleWorker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from callbacks.dispatcher import dispatch_once
from ivr.services import ROUTING_QUEUE
from tests.conftest import ACCOUNT_SID, OPS_TOKEN
from tests.twiml import call_form, parse, queue_caller, says, signed_post, verbs

CALLS_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Calls"


def caller(n: int) -> str:
    return f"CA{n:032x}"


def agent_leg(n: int) -> str:
    return f"CA{0xA000 + n:032x}"


def route_and_connect(app, mock, expected_calls: list[str]) -> list[dict]:
    """One dispatcher pass and the routing jobs, with Twilio's Calls API faked; returns the
    form of each redirect request Twilio received."""
    for sid in expected_calls:
        mock.add(responses.POST, f"{CALLS_URL}/{sid}.json", json={"sid": sid, "status": "in-progress"})
    with app.app_context():
        dispatch_once()
        hotline = app.extensions["hotline"]
        SimpleWorker([Queue(ROUTING_QUEUE, connection=hotline.redis)], connection=hotline.redis).work(burst=True)
    sent = [c for c in mock.calls if c.request.url.startswith(CALLS_URL)]
    return [{k: v[0] for k, v in parse_qs(c.request.body).items()} for c in sent[-len(expected_calls) :]]


def reserve_for_a103(app, client, clock, mock) -> list[dict]:
    """Caller 1 queued for payment in English and reserved for Emma (a103), who is available;
    returns the REST redirect Twilio received."""
    transfer(client, clock, 1)
    app.extensions["hotline"].routing.set_agent_status("a103", "available", int(clock.now.timestamp() * 1000))
    return route_and_connect(app, mock, [caller(1)])


def transfer(client, clock, sid: int, lang: str = "en") -> None:
    clock.advance(10)
    queue_caller(client, f"/voice/{lang}/node/payment/choice?attempt=1", call_form(caller(sid), Digits="0"))


def test_the_whisper_says_one_minute_in_the_singular(app, client, clock, hotline, no_unexpected_http):
    transfer(client, clock, 1)
    clock.advance(50)  # 60 s in line: "1 minute", not "1 minutes"
    hotline.routing.set_agent_status("a103", "available", int(clock.now.timestamp() * 1000))
    route_and_connect(app, no_unexpected_http, [caller(1)])
    leg = call_form(agent_leg(1), ParentCallSid=caller(1), Direction="outbound-dial", To="client:emma")
    text = says(parse(signed_post(client, "/voice/agent/a103/whisper", leg)).find("Gather"))[0].text
    assert text.startswith("payment call in English, waited 1 minute, ticket ")


def test_an_available_agent_gets_the_longest_waiting_caller_whispered_and_bridged(
    app, client, clock, hotline, no_unexpected_http, ticket_for
):
    transfer(client, clock, 1)
    transfer(client, clock, 2)
    clock.advance(120)
    hotline.routing.set_agent_status("a103", "available", int(clock.now.timestamp() * 1000))
    [redirect] = route_and_connect(app, no_unexpected_http, [caller(1)])
    assert redirect == {"Url": "https://hotline.example.com/voice/en/connect/a103", "Method": "POST"}
    assert hotline.routing.agents()["a103"][:1] == ("reserved",)

    # Twilio fetches the redirect URL for the caller: a Dial of the agent, whisper first.
    root = parse(signed_post(client, "/voice/en/connect/a103", call_form(caller(1))))
    assert verbs(root) == ["Dial"]
    dial = root.find("Dial")
    assert dial.get("action") == "/voice/en/connect/a103/done" and dial.get("timeout") == "20"
    client_noun = dial.find("Client")
    assert client_noun.text == "emma" and client_noun.get("url") == "/voice/agent/a103/whisper"

    # The agent answers and hears who calls and why.
    leg = call_form(agent_leg(1), ParentCallSid=caller(1), Direction="outbound-dial", To="client:emma")
    root = parse(signed_post(client, "/voice/agent/a103/whisper", leg))
    assert verbs(root) == ["Gather", "Hangup"]
    text = says(root.find("Gather"))[0].text
    assert text.startswith("payment call in English, waited 2 minutes, ticket ") and "Press 1 to accept" in text
    assert parse(signed_post(client, "/voice/agent/a103/accept", {**leg, "Digits": "1"})).findall("*") == []
    assert hotline.routing.agents()["a103"][0] == "busy"

    done = call_form(caller(1), DialCallStatus="completed", DialBridged="true", DialCallDuration="240")
    root = parse(signed_post(client, "/voice/en/connect/a103/done", done))
    assert verbs(root) == ["Say", "Hangup"]
    assert hotline.routing.agents()["a103"][0] == "wrap_up"
    signed_post(client, "/voice/status", call_form(caller(1), CallStatus="completed", CallDuration="400"))
    ticket = ticket_for(caller(1))
    assert ticket["outcome"] == "transferred" and ticket["agent"] == "a103"
    block = ticket["queue"]
    assert (block["queue"], block["result"], block["wait_s"], block["agents_missed"]) == (
        "payment",
        "answered",
        130,
        [],
    )

    # After wrap-up the agent is available again and takes the next caller.
    clock.advance(31)
    [redirect] = route_and_connect(app, no_unexpected_http, [caller(2)])
    assert redirect["Url"].endswith("/voice/en/connect/a103")


def test_an_agent_who_does_not_answer_is_set_away_and_the_caller_keeps_their_place(
    app, client, clock, hotline, no_unexpected_http, ticket_for
):
    for n in (1, 2, 3):
        transfer(client, clock, n)
    now_ms = int(clock.now.timestamp() * 1000)
    hotline.routing.set_agent_status("a103", "available", now_ms)
    route_and_connect(app, no_unexpected_http, [caller(1)])
    parse(signed_post(client, "/voice/en/connect/a103", call_form(caller(1))))
    assert hotline.routing.position(caller(2), "payment", "en") == 1  # caller 1 is out of line meanwhile

    root = parse(signed_post(client, "/voice/en/connect/a103/done", call_form(caller(1), DialCallStatus="no-answer")))
    assert verbs(root) == ["Say", "Enqueue"]
    assert root.find("Enqueue").text == "payment"
    assert root.find("Enqueue").get("action") == "/voice/en/node/agent_payment/queued"
    assert hotline.routing.agents()["a103"][0] == "away"
    assert [hotline.routing.position(caller(n), "payment", "en") for n in (1, 2, 3)] == [1, 2, 3]

    # The next matching agent gets the same caller, first in line.
    hotline.routing.set_agent_status("a101", "available", now_ms)
    [redirect] = route_and_connect(app, no_unexpected_http, [caller(1)])
    assert redirect["Url"].endswith("/voice/en/connect/a101")
    # The caller hangs up before a101 answers: an abandoned wait, with the agent who missed it.
    signed_post(client, "/voice/status", call_form(caller(1), CallStatus="completed", CallDuration="99"))
    block = ticket_for(caller(1))["queue"]
    assert block["result"] == "abandoned" and [m["agent"] for m in block["agents_missed"]] == ["a103"]


def test_an_agent_who_answers_but_does_not_accept_declines(app, client, clock, hotline, no_unexpected_http):
    reserve_for_a103(app, client, clock, no_unexpected_http)
    leg = call_form(agent_leg(1), ParentCallSid=caller(1))
    assert verbs(parse(signed_post(client, "/voice/agent/a103/accept", {**leg, "Digits": "7"}))) == ["Hangup"]
    done = call_form(caller(1), DialCallStatus="completed", DialBridged="false", DialCallDuration="12")
    root = parse(signed_post(client, "/voice/en/connect/a103/done", done))
    assert verbs(root) == ["Say", "Enqueue"] and hotline.routing.agents()["a103"][0] == "away"


def test_a_caller_who_hung_up_before_the_redirect_frees_the_agent(app, client, clock, hotline, no_unexpected_http):
    transfer(client, clock, 1)
    hotline.routing.set_agent_status("a103", "available", int(clock.now.timestamp() * 1000))
    no_unexpected_http.add(
        responses.POST,
        f"{CALLS_URL}/{caller(1)}.json",
        status=400,
        json={"code": 21220, "message": "Call is not in-progress. Cannot redirect.", "status": 400},
    )
    with app.app_context():
        dispatch_once()
        SimpleWorker([Queue(ROUTING_QUEUE, connection=hotline.redis)], connection=hotline.redis).work(burst=True)
    assert hotline.routing.agents()["a103"][0] == "available"
    assert hotline.routing.seat(caller(1)) is None


def test_twilio_failing_releases_the_reservation_after_the_retries(app, client, clock, hotline, no_unexpected_http):
    transfer(client, clock, 1)
    hotline.routing.set_agent_status("a103", "available", int(clock.now.timestamp() * 1000))
    no_unexpected_http.add(responses.POST, f"{CALLS_URL}/{caller(1)}.json", status=503, json={"message": "down"})
    with app.app_context():
        dispatch_once()
        queue = Queue(ROUTING_QUEUE, connection=hotline.redis)
        SimpleWorker([queue], connection=hotline.redis).work(burst=True)
        for _ in range(2):  # RQ's retries are scheduled; run them as the scheduler would
            registry = ScheduledJobRegistry(queue=queue)
            for job_id in registry.get_job_ids():
                registry.remove(job_id)
                queue.enqueue_job(queue.fetch_job(job_id))
            SimpleWorker([queue], connection=hotline.redis).work(burst=True)
        assert not ScheduledJobRegistry(queue=queue).get_job_ids()
        assert len(FailedJobRegistry(queue=queue).get_job_ids()) == 1  # kept for ops to see
    assert len([c for c in no_unexpected_http.calls if c.request.url.startswith(CALLS_URL)]) == 3
    assert hotline.routing.agents()["a103"][0] == "available"
    assert hotline.routing.position(caller(1), "payment", "en") == 1


def test_two_app_processes_sharing_one_redis_behave_as_one(app, make_app, client, clock, no_unexpected_http):
    """A caller queued through one app process, an agent made available through another's API,
    and the routing pass run by a third see one and the same line."""
    other = make_app()
    third = make_app()
    ops = {"Authorization": f"Bearer {OPS_TOKEN}"}
    transfer(client, clock, 1)
    transfer(other.test_client(), clock, 2)
    assert app.extensions["hotline"].routing.position(caller(2), "payment", "en") == 2
    response = other.test_client().post("/api/agents/a103/status", json={"status": "available"}, headers=ops)
    assert response.status_code == 200
    assert client.get("/api/agents", headers=ops).get_json()["agents"][2]["status"] == "available"
    [redirect] = route_and_connect(third, no_unexpected_http, [caller(1)])
    assert redirect["Url"].endswith("/voice/en/connect/a103")
    assert other.extensions["hotline"].routing.agents()["a103"][0] == "reserved"
    queues = {q["queue"]: q for q in third.test_client().get("/api/queues", headers=ops).get_json()["queues"]}
    assert queues["payment"]["waiting"] == 1


def test_twilio_reporting_the_redirect_to_the_enqueue_action_keeps_the_seat(
    app, client, clock, hotline, no_unexpected_http
):
    reserve_for_a103(app, client, clock, no_unexpected_http)
    # One reading of Twilio: the Enqueue action is requested with QueueResult=redirected.
    form = call_form(caller(1), QueueResult="redirected", QueueTime="20")
    assert parse(signed_post(client, "/voice/en/node/agent_payment/queued", form)).findall("*") == []
    root = parse(signed_post(client, "/voice/en/connect/a103", call_form(caller(1))))
    assert verbs(root) == ["Dial"]  # the seat is still there: the agent is dialled


@pytest.mark.parametrize(("accepted", "after"), [(False, "available"), (True, "wrap_up")])
def test_a_caller_who_hangs_up_while_being_connected_frees_the_agent(
    app, client, clock, hotline, no_unexpected_http, accepted, after
):
    reserve_for_a103(app, client, clock, no_unexpected_http)
    if accepted:
        leg = call_form(agent_leg(1), ParentCallSid=caller(1))
        parse(signed_post(client, "/voice/agent/a103/accept", {**leg, "Digits": "1"}))
    # The final status overtakes the Dial action (or the Dial action never comes).
    signed_post(client, "/voice/status", call_form(caller(1), CallStatus="completed", CallDuration="50"))
    assert hotline.routing.agents()["a103"][0] == after
    assert hotline.routing.seat(caller(1)) is None


def test_a_missed_agent_for_a_caller_whose_seat_is_gone_still_queues_them_sensibly(client):
    # e.g. the seat expired or Redis lost it: back into the default agent queue, not an error.
    root = parse(signed_post(client, "/voice/en/connect/a103/done", call_form(caller(9), DialCallStatus="busy")))
    assert verbs(root) == ["Say", "Enqueue"]
    assert root.find("Enqueue").text == "general"
    assert root.find("Enqueue").get("action") == "/voice/en/node/agent/queued"


def test_a_lost_seat_at_connect_frees_the_agent_and_gives_the_caller_a_new_place(
    app, client, clock, hotline, no_unexpected_http
):
    reserve_for_a103(app, client, clock, no_unexpected_http)
    hotline.redis.delete("{routing}:caller:" + caller(1))  # Redis lost the seat
    root = parse(signed_post(client, "/voice/en/connect/a103", call_form(caller(1))))
    assert verbs(root) == ["Say", "Enqueue"] and root.find("Enqueue").text == "general"
    assert hotline.routing.agents()["a103"][0] == "available"
    assert hotline.routing.position(caller(1), "general", "en") == 1


def test_a_caller_who_hangs_up_while_the_agent_rings_does_not_set_the_agent_away(
    app, client, clock, hotline, no_unexpected_http
):
    reserve_for_a103(app, client, clock, no_unexpected_http)
    done = call_form(caller(1), CallStatus="completed", DialCallStatus="canceled")
    assert parse(signed_post(client, "/voice/en/connect/a103/done", done)).findall("*") == []
    assert hotline.routing.agents()["a103"][0] == "available"
    assert hotline.routing.seat(caller(1)) is None


def test_a_late_accept_cannot_make_a_freed_agent_busy(app, client, clock, hotline, no_unexpected_http):
    reserve_for_a103(app, client, clock, no_unexpected_http)
    signed_post(client, "/voice/status", call_form(caller(1), CallStatus="completed", CallDuration="20"))
    leg = call_form(agent_leg(1), ParentCallSid=caller(1))
    assert verbs(parse(signed_post(client, "/voice/agent/a103/accept", {**leg, "Digits": "1"}))) == ["Hangup"]
    assert hotline.routing.agents()["a103"][0] == "available"


def test_a_reservation_whose_webhooks_never_come_is_released(app, client, clock, hotline, no_unexpected_http):
    reserve_for_a103(app, client, clock, no_unexpected_http)
    clock.advance(20 + 10 + 61)  # ring + accept timeouts + a minute: nothing came back
    with app.app_context():
        dispatch_once()  # releases a103 and puts the caller back; then matches them again
    assert hotline.routing.agents()["a103"][:1] == ("reserved",)
    assert hotline.routing.agents()["a103"][1] == int(clock.now.timestamp() * 1000)


def test_an_error_on_the_agents_leg_hangs_up_that_leg(app, client, clock, hotline, no_unexpected_http):
    transfer(client, clock, 1)
    hotline.redis.hset("{routing}:caller:" + caller(1), "arrived_ms", "garbage")
    leg = call_form(agent_leg(1), ParentCallSid=caller(1))
    assert verbs(parse(signed_post(client, "/voice/agent/a103/whisper", leg))) == ["Hangup"]


def test_a_retried_connect_offers_the_agent_once_on_the_ticket(app, client, clock, hotline, no_unexpected_http):
    """Twilio retries the redirect to the agent's Dial with the same idempotency token: the
    caller's ticket gets one `agent_offered`, not two."""
    transfer(client, clock, 1)
    clock.advance(60)
    hotline.routing.set_agent_status("a103", "available", int(clock.now.timestamp() * 1000))
    route_and_connect(app, no_unexpected_http, [caller(1)])
    for _ in range(2):
        retry = {"I-Twilio-Idempotency-Token": "con-1"}
        assert verbs(parse(signed_post(client, "/voice/en/connect/a103", call_form(caller(1)), headers=retry))) == [
            "Dial"
        ]
    with app.app_context():
        events = hotline.calls.events(caller(1))
    offered = [e["id"] for e in events if e["kind"] == "agent_offered"]
    assert len(offered) == 2 and len(set(offered)) == 1, offered
