"""Live state across a config reload that removes or renames what it refers to: callers and
callbacks waiting in a dropped line are moved, at their places, to a line agents serve; callbacks
already promised are kept when ops turn new ones off; an attempt keeps the dial mode it began in."""

from __future__ import annotations

import json
import os
from datetime import UTC
from urllib.parse import parse_qs

import responses
import yaml

from callbacks.dispatcher import dispatch_once
from ivr.queues.callbacks import Callback
from ivr.queues.state import LINES, Seat, waiting_key
from tests.conftest import SHIPPED_CONFIG
from tests.test_call_flow import _language_texts
from tests.test_callback_recovery import listing, run_dial_retries
from tests.test_callbacks import (
    CALLS_URL,
    HOTLINE_NUMBER,
    book_with_caller_id,
    now_ms,
    out_sid,
    run_routing,
    sid,
    step,
    the_callback,
)
from tests.test_routing_calls import route_and_connect
from tests.twiml import call_form, parse, queue_caller, signed_post, verbs


def shipped() -> dict:
    return yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))


def live_app(make_app, tmp_path, sleeps, data: dict | None = None):
    path = tmp_path / "hotline.yaml"
    path.write_text(yaml.safe_dump(data or shipped(), allow_unicode=True, sort_keys=False), encoding="utf-8")
    return make_app(HOTLINE_CONFIG=str(path), TWILIO_CALLER_ID=HOTLINE_NUMBER, SLEEP=sleeps), path


def publish(app, path, data: dict) -> None:
    """Ops replace the live file with a valid new version; the running app picks it up."""
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert app.extensions["hotline"].config.reload_if_changed(), "the new config was refused"


def payment_renamed() -> dict:
    """`payment` renamed `payments` (same skills); its transfer node follows."""
    data = shipped()
    queues = data["queues"]
    queues["payments"] = {**queues.pop("payment"), "skills": ["payment"]}
    data["menu"]["nodes"]["agent_payment"]["queue"] = "payments"
    return data


def without_zh() -> dict:
    data = shipped()
    del data["languages"]["zh"]
    for texts in _language_texts(data):
        texts.pop("zh", None)
    for agent in data["agents"]:
        agent["languages"] = [lg for lg in agent["languages"] if lg != "zh"]
    for lang in data["languages"].values():
        lang["language_names"].pop("zh", None)
    return data


def reserved_for(hotline, agent_id: str) -> tuple[str, str | None]:
    status, _, call = hotline.routing.agents().get(agent_id, ("offline", 0, None))
    return status, call


# ----- a queue renamed or removed -----------------------------------------------------------


def test_callers_waiting_in_a_renamed_queue_are_still_served(make_app, tmp_path, sleeps, clock, ticket_for):
    app, path = live_app(make_app, tmp_path, sleeps)
    client, hotline = app.test_client(), app.extensions["hotline"]
    queue_caller(client, "/voice/en/node/payment/choice?attempt=1", call_form(sid(1), Digits="0"))
    assert hotline.routing.seat(sid(1)).queue == "payment"
    publish(app, path, payment_renamed())
    with app.app_context():
        dispatch_once()  # nobody free: the pass only moves the line
    seat = hotline.routing.seat(sid(1))
    assert (seat.queue, seat.lang) == ("payments", "en")
    # Twilio still runs the hold loop of the old queue's URL: it asks about the caller's new line.
    root = parse(signed_post(client, "/voice/en/hold/payment", call_form(sid(1))))
    # (A caller the turn cannot place hears the plain hold message, with no callback offer.)
    offer = root.find("Gather")
    assert offer is not None and offer.get("action") == "/voice/en/hold/payment/key"
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))  # Emma: payment, en
    with app.app_context():
        dispatch_once()
    assert reserved_for(hotline, "a103") == ("reserved", sid(1)), "the caller waits in a line nobody serves"
    # The ticket tells it: served from `payments`, moved there from `payment` by the reload.
    signed_post(client, "/voice/status", call_form(sid(1), CallStatus="completed", CallDuration="90"))
    block = ticket_for(sid(1))["queue"]
    assert block["queue"] == "payments"
    assert [(m["from"], m["to"]) for m in block["moved"]] == [("payment/en", "payments/en")]


def test_a_dropped_line_keeps_its_callers_order_among_those_already_in_the_new_one(make_app, tmp_path, sleeps, clock):
    app, path = live_app(make_app, tmp_path, sleeps)
    client, hotline = app.test_client(), app.extensions["hotline"]
    for n in (1, 2):  # two in `payment`, then the rename; then one joins `payments`, then one more moved
        clock.advance(10)
        queue_caller(client, "/voice/en/node/payment/choice?attempt=1", call_form(sid(n), Digits="0"))
    publish(app, path, payment_renamed())
    clock.advance(10)
    queue_caller(client, "/voice/en/node/payment/choice?attempt=1", call_form(sid(3), Digits="0"))
    # A web process still on the old config seats someone in the old line after the move.
    with app.app_context():
        dispatch_once()
    assert hotline.routing.seat(sid(3)).queue == "payments"
    late = hotline.routing.seat(sid(2))
    hotline.routing.join(Seat(sid(4), "payment", "en", late.arrived_ms + 1, "agent_payment", "payment"))
    with app.app_context():
        dispatch_once()
    order = [m.decode() for m in hotline.redis.zrange(waiting_key("payments", "en"), 0, -1)]
    assert order == [sid(1), sid(2), sid(4), sid(3)]
    assert hotline.redis.zcard(waiting_key("payment", "en")) == 0


def test_a_pending_callback_in_a_renamed_queue_is_still_dialled(make_app, tmp_path, sleeps, clock):
    app, path = live_app(make_app, tmp_path, sleeps)
    client, hotline = app.test_client(), app.extensions["hotline"]
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    assert (callback.status, callback.queue) == ("pending", "payment")
    publish(app, path, payment_renamed())
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    with app.app_context():
        dispatch_once()  # reserve only: the dial job stays queued
    current = hotline.callbacks.get(callback.id)
    assert current.status == "dialling", f"callback still {current.status} in dead line {current.queue!r}"


def test_a_caller_whose_agent_missed_after_their_queue_was_renamed_gets_a_live_seat(
    make_app, tmp_path, sleeps, clock, no_unexpected_http
):
    app, path = live_app(make_app, tmp_path, sleeps)
    client, hotline = app.test_client(), app.extensions["hotline"]
    queue_caller(client, "/voice/en/node/payment/choice?attempt=1", call_form(sid(1), Digits="0"))
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    route_and_connect(app, no_unexpected_http, [sid(1)])
    parse(signed_post(client, "/voice/en/connect/a103", call_form(sid(1))))
    publish(app, path, payment_renamed())
    # Emma does not answer: the caller goes back to their place.
    done = call_form(sid(1), DialCallStatus="no-answer")
    root = parse(signed_post(client, "/voice/en/connect/a103/done", done))
    enqueue = root.find("Enqueue")
    assert enqueue.text == "payments" and enqueue.get("waitUrl") == "/voice/en/hold/payments"
    seat = hotline.routing.seat(sid(1))
    # Twilio holds them in `payments` and the hold loop asks about `payments`; our seat must agree.
    assert seat.queue == "payments", f"seat left in the removed line {seat.queue!r}"
    assert hotline.routing.position(sid(1), "payments", "en") == 1


# ----- a language removed -------------------------------------------------------------------


def test_callers_waiting_in_a_removed_language_are_still_served(make_app, tmp_path, sleeps, clock):
    app, path = live_app(make_app, tmp_path, sleeps)
    client, hotline = app.test_client(), app.extensions["hotline"]
    queue_caller(client, "/voice/zh/node/payment/choice?attempt=1", call_form(sid(1), Digits="0"))
    assert hotline.routing.position(sid(1), "payment", "zh") == 1
    publish(app, path, without_zh())
    hotline.routing.set_agent_status("a102", "available", now_ms(clock))  # Wang: payment, now ja only
    with app.app_context():
        dispatch_once()
    assert reserved_for(hotline, "a102") == ("reserved", sid(1)), "the zh line is served by nobody any more"


def test_a_callback_booked_in_a_removed_language_is_still_dialled(make_app, tmp_path, sleeps, clock):
    app, path = live_app(make_app, tmp_path, sleeps)
    hotline = app.extensions["hotline"]
    t = now_ms(clock)
    fresh = Callback(
        id="", status="pending", number="+819012345678", call_sid=sid(1), lang="zh", queue="payment",
        node="agent_payment", branch="payment", arrived_ms=t, requested_ms=t, updated_ms=t,
    )  # fmt: skip
    callback, _ = hotline.callbacks.request(fresh)
    assert hotline.routing.redis.zscore(waiting_key("payment", "zh"), f"cb:{callback.id}") is not None
    publish(app, path, without_zh())
    hotline.routing.set_agent_status("a102", "available", now_ms(clock))
    with app.app_context():
        dispatch_once()
    current = hotline.callbacks.get(callback.id)
    assert current.status == "dialling", f"callback still {current.status} in the zh line"


# ----- callbacks disabled while a caller is giving their number ------------------------------


def test_a_waiting_caller_giving_a_callback_number_when_callbacks_are_disabled_keeps_their_place(
    make_app, tmp_path, sleeps, clock
):
    app, path = live_app(make_app, tmp_path, sleeps)
    client, hotline = app.test_client(), app.extensions["hotline"]
    step(client, "/voice/incoming", 1)
    queue_caller(client, "/voice/en/node/payment/choice?attempt=1", call_form(sid(1), Digits="0"))
    arrived = hotline.routing.seat(sid(1)).arrived_ms
    clock.advance(600)  # ten minutes on hold, then the offer is taken
    signed_post(client, "/voice/en/hold/payment", call_form(sid(1)))
    assert verbs(parse(signed_post(client, "/voice/en/hold/payment/key", call_form(sid(1), Digits="2")))) == ["Leave"]
    leave = call_form(sid(1), QueueResult="leave", QueueTime="600")
    signed_post(client, "/voice/en/node/agent_payment/queued", leave)  # out of line; the draft keeps the seat
    data = shipped()
    data["callbacks"]["enabled"] = False
    publish(app, path, data)
    root = step(client, "/voice/en/callback/number/answer?attempt=1", 1, Digits="1")
    # Either the offer already taken is honoured, or the caller goes back to their place in line.
    # Today: "Sorry, something went wrong" and the main menu; ten minutes in line are lost.
    booked = hotline.callbacks.open_for("+819012345678") is not None
    seat = hotline.routing.seat(sid(1))
    back_in_line = root.find("Enqueue") is not None and seat is not None and seat.arrived_ms == arrived
    assert booked or back_in_line, f"neither booked nor back in line: {verbs(root)}, seat {seat}"


def test_with_callbacks_disabled_a_callback_still_dialled_can_still_be_cancelled_by_its_caller(
    make_app, tmp_path, sleeps, clock
):
    app, path = live_app(make_app, tmp_path, sleeps)
    client, hotline = app.test_client(), app.extensions["hotline"]
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    data = shipped()
    data["callbacks"]["enabled"] = False
    publish(app, path, data)
    # The customer phones again to cancel: is the callback they booked mentioned?
    root = step(client, "/voice/incoming", 2)
    offered = any(f"/callback/pending/{callback.id}" in (g.get("action") or "") for g in root.iter("Gather"))
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    with app.app_context():
        dispatch_once()
    dialled = hotline.callbacks.get(callback.id).status == "dialling"
    assert offered or not dialled, "still dialled after the switch, but its caller can no longer cancel it"


# ----- dial_mode switched while an attempt is in flight -------------------------------------


def test_dial_mode_switched_between_a_5xx_and_its_retry_does_not_ring_twice(
    make_app, tmp_path, sleeps, clock, no_unexpected_http
):
    app, path = live_app(make_app, tmp_path, sleeps)
    client, hotline = app.test_client(), app.extensions["hotline"]
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    posts: list = []
    outcomes = [(503, {"code": 20503, "message": "Service Unavailable", "status": 503}), 2]

    def create(request):  # the first create-call answers 503, but Twilio placed the call
        outcome = outcomes[len(posts)]
        posts.append(parse_qs(request.body))
        if isinstance(outcome, tuple):
            return outcome[0], {}, json.dumps(outcome[1])
        return 201, {}, json.dumps({"sid": out_sid(outcome), "status": "queued"})

    def calls_list(request):  # Twilio's call list, filtered by To as Twilio does
        to = parse_qs(request.url.split("?", 1)[1]).get("To", [""])[0]
        placed = [(out_sid(1), "+819012345678", clock.now.astimezone(UTC))]
        return 200, {}, json.dumps(listing(*[c for c in placed if c[1] == to]))

    no_unexpected_http.add_callback(responses.POST, CALLS_URL, callback=create)
    no_unexpected_http.add_callback(responses.GET, CALLS_URL, callback=calls_list)
    run_routing(app)  # customer first: 503 (the customer's phone rings all the same)
    data = shipped()
    data["callbacks"]["dial_mode"] = "agent_first"
    publish(app, path, data)
    run_dial_retries(app)  # the retry looks for the placed call... at the agent's number
    assert len(posts) == 1, f"attempt 1 placed twice: {[p['To'] for p in posts]}"
    assert hotline.callbacks.get(callback.id).attempt["call_sid"] == out_sid(1)


def test_lines_from_before_the_registry_are_found_once_by_a_scan(make_app, tmp_path, sleeps, clock):
    """A Redis from before lines were registered: the first pass scans for waiting sets."""
    app, path = live_app(make_app, tmp_path, sleeps)
    hotline = app.extensions["hotline"]
    hotline.routing.join(Seat(sid(1), "payment", "en", now_ms(clock), "agent_payment", "payment"))
    hotline.redis.delete(LINES)
    # The new code seats someone elsewhere before the router first looks: the set now exists.
    hotline.routing.join(Seat(sid(2), "general", "en", now_ms(clock), "agent", "agent"))
    publish(app, path, payment_renamed())
    with app.app_context():
        dispatch_once()
    assert hotline.routing.seat(sid(1)).queue == "payments"
    assert hotline.routing.lines() == {("payments", "en"), ("general", "en")}


def test_routers_on_two_config_versions_do_not_move_callers_back_and_forth(make_app, tmp_path, sleeps, clock):
    """Hosts switch one by one: until no router runs the old config, a line it serves stays put
    (and the new config's lines are not moved back by the old routers)."""
    for host in ("old", "new"):
        (tmp_path / host).mkdir()
    old_app, _ = live_app(make_app, tmp_path / "old", sleeps)
    new_app, _ = live_app(make_app, tmp_path / "new", sleeps, payment_renamed())
    queue_caller(old_app.test_client(), "/voice/en/node/payment/choice?attempt=1", call_form(sid(1), Digits="0"))
    hotline = old_app.extensions["hotline"]
    seen = []
    for app in (old_app, new_app, old_app, new_app):
        clock.advance(1)
        with app.app_context():
            dispatch_once()
        seen.append(hotline.routing.seat(sid(1)).queue)
    assert seen == ["payment"] * 4  # the old hosts still serve it
    clock.advance(31)  # every router has moved on to the new config
    with new_app.app_context():
        dispatch_once()
    assert hotline.routing.seat(sid(1)).queue == "payments"
    with old_app.app_context():  # a straggler on the old config does not move them back
        dispatch_once()
    assert hotline.routing.seat(sid(1)).queue == "payments"
