"""While waiting, callers hear their place and an honest estimate in their language, and only
when something changed; the estimates land on the ticket next to the actual wait."""

from __future__ import annotations

import json

import pytest

from ivr.calllog import make_event
from ivr.menus.loader import load_config
from ivr.queues.estimator import (
    AbandonmentState,
    DecayedMeanState,
    QueueSnapshot,
    estimate_wait,
    spoken_range,
)
from ivr.queues.live import (
    ABANDONMENT,
    HANDLE_TIME,
    abandon_key,
    aht_key,
    estimate_for,
    fold_stats,
    note_handled,
)
from ivr.queues.state import caller_key
from tests.conftest import SHIPPED_CONFIG
from tests.twiml import call_form, parse, queue_caller, signed_post, verbs

CONFIG = load_config(SHIPPED_CONFIG)


def sid(n: int) -> str:
    return f"CA{n:032x}"


def hold(client, n: int, lang: str = "en"):
    return parse(signed_post(client, f"/voice/{lang}/hold/payment", call_form(sid(n), CallStatus="ringing")))


OFFER = CONFIG.prompts.callback_offer["en"].format(key=CONFIG.callbacks.key)


def texts(root) -> list[str]:
    """What the caller hears, but for the callback offer that goes with long waits
    (tests/test_callbacks.py)."""
    return [s.text for s in root.iter("Say") if s.text != OFFER]


@pytest.fixture
def busy_line(app, client, clock):
    """Five English callers in the payment line, each told their place and wait before joining;
    both agents who serve it are on calls."""
    routing = app.extensions["hotline"].routing
    now_ms = int(clock.now.timestamp() * 1000)
    routing.set_agent_status("a101", "busy", now_ms, call_sid=sid(90))
    routing.set_agent_status("a103", "busy", now_ms, call_sid=sid(91))
    for n in range(1, 6):
        clock.advance(5)
        queue_caller(client, "/voice/en/node/payment/choice?attempt=1", call_form(sid(n), Digits="0"))
    return routing


def first_turns(client, clock, *callers: int) -> None:
    """Each caller's first hold turn (the welcome), then the announcement interval passes."""
    for n in callers:
        hold(client, n)
    clock.advance(CONFIG.queues["payment"].announce_every_s)


def a_caller_leaves(client, n: int) -> None:
    hung_up = call_form(sid(n), QueueResult="hangup", QueueTime="40", CallStatus="completed")
    parse(signed_post(client, "/voice/en/node/agent_payment/queued", hung_up))


def expected_range(ahead: int) -> str:
    estimate = estimate_wait(QueueSnapshot(ahead, 2, 2, HANDLE_TIME.prior_s, 1 / ABANDONMENT.prior_patience_s))
    spoken = spoken_range(estimate)
    assert spoken.kind == "range"
    return CONFIG.prompts.wait_range["en"].format(lo=spoken.lo_min, hi=spoken.hi_min)


def test_the_first_turn_of_a_caller_told_the_wait_before_joining_only_welcomes(client, busy_line):
    root = hold(client, 5)
    # The place and wait were just said before the queue; the callback key stays live.
    assert verbs(root) == ["Gather"]
    gather = root.find("Gather")
    assert verbs(gather) == ["Say", "Say", "Pause"]
    assert gather.get("action") == "/voice/en/hold/payment/key" and gather.get("numDigits") == "1"
    assert [s.text for s in gather.iter("Say")] == [CONFIG.prompts.hold["en"], OFFER]


def test_first_turn_says_hold_place_and_estimate_when_nothing_was_said_before(app, client):
    # Off-peak with a free agent the wait is short: the caller joins without an announcement.
    app.extensions["hotline"].routing.set_agent_status("a101", "available", 0)
    root = queue_caller(client, "/voice/en/node/payment/choice?attempt=1", call_form(sid(1), Digits="0"))
    assert verbs(root) == ["Say", "Enqueue"]
    root = hold(client, 1)
    assert verbs(root) == ["Say", "Say", "Say", "Pause"]
    assert texts(root) == [
        CONFIG.prompts.hold["en"],
        CONFIG.prompts.queue_position["en"].format(position=1),
        CONFIG.prompts.wait_less_than_minute["en"],
    ]
    assert all(s.get("language") == "en-US" for s in root.iter("Say"))


def test_a_changed_place_is_announced_with_the_offer(client, clock, busy_line):
    first_turns(client, clock, 5)
    a_caller_leaves(client, 1)
    root = hold(client, 5)
    assert verbs(root) == ["Gather"]
    assert [s.text for s in root.iter("Say")] == [
        CONFIG.prompts.queue_position["en"].format(position=4),
        expected_range(3),
        OFFER,
    ]


def test_in_mandarin_too(app, client, clock):
    app.extensions["hotline"].routing.set_agent_status("a102", "busy", 0, call_sid=sid(92))
    root = parse(signed_post(client, "/voice/zh/node/payment/choice?attempt=1", call_form(sid(7), Digits="0")))
    spoken = [s.text for s in root.iter("Say")]
    assert CONFIG.prompts.queue_position["zh"].format(position=1) in spoken
    assert any("分钟" in text for text in spoken) and all(s.get("language") == "cmn-CN" for s in root.iter("Say"))
    redirect = root.find("Redirect").text
    queue_caller(client, redirect, call_form(sid(7)))
    assert [s.text for s in hold(client, 7, "zh").iter("Say")][0] == CONFIG.prompts.hold["zh"]


def test_nothing_new_means_nothing_said(client, clock, busy_line):
    hold(client, 5)  # the welcome
    clock.advance(30)
    assert verbs(hold(client, 5)) == ["Pause"]  # not due yet
    clock.advance(60)
    assert verbs(hold(client, 5)) == ["Pause"]  # due, but nothing changed since before the queue


def test_no_agent_on_duty_promises_no_figure(client):
    root = parse(signed_post(client, "/voice/en/node/payment/choice?attempt=1", call_form(sid(8), Digits="0")))
    spoken = [s.text for s in root.iter("Say")]
    position = CONFIG.prompts.queue_position["en"].format(position=1)
    assert spoken[spoken.index(position) + 1] == CONFIG.prompts.wait_unknown["en"]


def test_a_time_the_caller_has_outwaited_is_not_repeated(app, client, clock, busy_line):
    now_s = clock.now.timestamp()
    current = estimate_for(busy_line, CONFIG, sid(5), "payment", "en", now_s)
    said = [current.spoken.kind, current.spoken.lo_min, current.spoken.hi_min]
    note = {"at": now_s - 600, "position": 9, "spoken": said, "promised_at": now_s - 600, "upper_s": 300}
    app.extensions["hotline"].redis.hset(caller_key(sid(5)), "announced", json.dumps(note))
    assert texts(hold(client, 5)) == [CONFIG.prompts.queue_position["en"].format(position=5)]


def test_estimates_are_on_the_ticket_with_the_actual_wait(client, clock, busy_line, ticket_for):
    first_turns(client, clock, 5)  # told place 5 before joining; 60 s later ...
    a_caller_leaves(client, 1)
    hold(client, 5)  # ... place 4
    clock.advance(140)
    busy_line.leave(sid(5))  # taken by an agent (as routing would) ...
    hotline = client.application.extensions["hotline"]
    hotline.calls.append(sid(5), [make_event("agent_accepted", clock.now, agent="a101")])
    signed_post(client, "/voice/status", call_form(sid(5), CallStatus="completed", CallDuration="400"))
    ticket = ticket_for(sid(5))
    block = ticket["queue"]
    assert block["result"] == "answered"
    # The path shows the caller heard the wait and stayed (the offer's Gather fell through).
    stayed = ticket["path"][-1]
    assert stayed["node"] == "agent_payment"
    assert [(i["input"], i["result"]) for i in stayed["inputs"]] == [("-", "stayed")]
    told = [(e["before_queue"], e["position"], e["actual_remaining_s"]) for e in block["estimates"]]
    assert told == [(True, 5, 200), (False, 4, 140)]
    assert all(e["spoken"]["kind"] == "range" and e["lo_s"] < e["hi_s"] for e in block["estimates"])
    assert all(e["spoken"]["lo_min"] < e["spoken"]["hi_min"] for e in block["estimates"])


def test_hang_ups_and_handle_times_feed_the_statistics(app, client, clock, busy_line):
    routing = busy_line
    for n in (1, 2):  # two hang up while queued
        form = call_form(sid(n), QueueResult="hangup", QueueTime="60", CallStatus="completed")
        parse(signed_post(client, "/voice/en/node/agent_payment/queued", form))
    now_s = clock.now.timestamp()
    fold_stats(routing, CONFIG, now_s)
    state = app.extensions["hotline"].redis.hgetall(abandon_key("payment"))
    folded = AbandonmentState.from_mapping(state)
    assert folded.abandons == 2 and folded.waiting == 3
    assert ABANDONMENT.rate(folded, now_s) > 1 / ABANDONMENT.prior_patience_s
    with routing.redis.pipeline() as pipe:
        for seconds in (120, 120, 120, 120, 120, 120, 120, 120, 120, 120):
            note_handled(pipe, "payment", seconds)
        pipe.execute()
    fold_stats(routing, CONFIG, now_s + 1)
    aht = HANDLE_TIME.value(DecayedMeanState.from_mapping(routing.redis.hgetall(aht_key("payment"))), now_s + 1)
    assert 120 < aht < HANDLE_TIME.prior_s  # pulled from the 300 s prior towards the 120 s calls


def before_queue(client, n: int, node: str = "payment", lang: str = "en"):
    return parse(signed_post(client, f"/voice/{lang}/node/{node}/choice?attempt=1", call_form(sid(n), Digits="0")))


def test_at_peak_the_estimate_comes_before_queuing_even_when_short(app, client, clock):
    app.extensions["hotline"].routing.set_agent_status("a103", "available", 0)
    app.extensions["hotline"].routing.set_agent_status("a101", "available", 0)
    root = before_queue(client, 1)  # Tuesday 10:00 in Tokyo: not peak, an agent is free
    assert verbs(root) == ["Say", "Enqueue"]
    clock.now = clock.now.replace(hour=3, minute=30)  # 12:30 in Tokyo: the lunch peak
    root = before_queue(client, 2)
    assert verbs(root) == ["Gather", "Redirect"]
    assert CONFIG.prompts.wait_less_than_minute["en"] in [s.text for s in root.iter("Say")]


def test_a_wait_past_closing_is_announced_with_the_closing_time(app, client, clock, busy_line):
    clock.now = clock.now.replace(hour=10, minute=57)  # 19:57 in Tokyo; the line closes at 20:00
    root = before_queue(client, 6)
    spoken = [s.text for s in root.iter("Say")]
    assert CONFIG.prompts.closing_soon["en"].format(time="8 PM") in spoken
    assert spoken[-1] == CONFIG.prompts.stay_or_message["en"].format(key="1")
    # Pressing the message key instead of waiting leads to the message, not the queue.
    root = parse(signed_post(client, "/voice/en/node/agent_payment/choice?attempt=1", call_form(sid(6), Digits="1")))
    assert verbs(root) == ["Say", "Record", "Say", "Redirect"]
    assert busy_line.position(sid(6), "payment", "en") is None


def test_with_nobody_on_duty_near_closing_the_caller_hears_the_closing_and_the_opening(app, client, clock):
    """No estimate (nobody staffed) bounds the wait: 4 minutes before closing it may well run
    past it, so the callback offer names the opening too."""
    clock.now = clock.now.replace(hour=10, minute=56)  # 19:56 in Tokyo
    spoken = [s.text for s in before_queue(client, 7).iter("Say")]
    assert CONFIG.prompts.wait_unknown["en"] in spoken
    assert CONFIG.prompts.closing_soon["en"].format(time="8 PM") in spoken
    offer = CONFIG.prompts.callback_offer_past_closing["en"].format(key="2", opening="tomorrow, Wednesday, at 9 AM")
    assert offer in spoken
    # Taking it, the confirmation says the same: at their turn, or, if we close first, then.
    signed_post(client, "/voice/en/node/agent_payment/choice?attempt=1", call_form(sid(7), Digits="2"))
    root = parse(signed_post(client, "/voice/en/callback/number/answer?attempt=1", call_form(sid(7), Digits="1")))
    said = [s.text for s in root.iter("Say")]
    assert said[0].startswith("Thank you. We will call you back at the number ending in 5 6 7 8 when it is your turn")
    assert "if we close first, when we open, tomorrow, Wednesday, at 9 AM" in said[0]
    # In the morning the closing is far off: nothing about it.
    clock.now = clock.now.replace(hour=1, minute=0)  # 10:00 in Tokyo
    spoken = [s.text for s in before_queue(client, 8).iter("Say")]
    assert CONFIG.prompts.wait_unknown["en"] in spoken
    assert not any("close" in text for text in spoken)


@pytest.fixture
def small_queues(make_app, tmp_path):
    import yaml

    data = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    data["queues"]["payment"]["max_size"] = 2  # overflow: to the general queue
    data["queues"]["refund"]["max_size"] = 1  # overflow: a message
    path = tmp_path / "hotline.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return make_app(HOTLINE_CONFIG=str(path))


def test_a_full_queue_overflows_as_configured(small_queues):
    client = small_queues.test_client()
    for n in (1, 2, 3):
        root = queue_caller(client, "/voice/en/node/payment/choice?attempt=1", call_form(sid(n), Digits="0"))
        assert root.find("Enqueue").text == ("payment" if n < 3 else "general")
    queue_caller(client, "/voice/en/node/refund/choice?attempt=1", call_form(sid(4), Digits="3"))
    root = parse(signed_post(client, "/voice/en/node/refund/choice?attempt=1", call_form(sid(5), Digits="3")))
    assert [s.text for s in root.iter("Say")][-4:-1] == [
        CONFIG.prompts.queue_full["en"],
        CONFIG.prompts.callback_offer_closed["en"].format(key=CONFIG.callbacks.key),
        CONFIG.prompts.closed_offer_message["en"].format(key="1"),
    ]
    assert root.find("Enqueue") is None


def test_an_abandoned_wait_is_on_the_ticket_with_what_was_announced(client, clock, busy_line, ticket_for):
    hold(client, 4)
    clock.advance(95)
    form = call_form(sid(4), QueueResult="hangup", QueueTime="115", CallStatus="completed")
    parse(signed_post(client, "/voice/en/node/agent_payment/queued", form))
    signed_post(client, "/voice/status", call_form(sid(4), CallStatus="completed", CallDuration="140"))
    ticket = ticket_for(sid(4))
    block = ticket["queue"]
    assert ticket["outcome"] == "abandoned" and block["result"] == "abandoned"
    assert block["wait_s"] == 5 + 95  # joined 5 s before the last caller, then 95 s of waiting
    heard = [
        (e["before_queue"], e["position"], e["spoken"]["kind"], e["actual_remaining_s"]) for e in block["estimates"]
    ]
    assert heard == [(True, 4, "range", None)]


def test_callers_told_the_same_place_before_joining_are_corrected_on_their_first_turn(app, client, clock):
    """Two callers hear the estimate before queuing at the same moment: both 'number 1'. The one
    who joins second is number 2, and hears so on the first hold turn, not minutes later."""
    routing = app.extensions["hotline"].routing
    now_ms = int(clock.now.timestamp() * 1000)
    routing.set_agent_status("a101", "busy", now_ms, call_sid=sid(90))
    routing.set_agent_status("a103", "busy", now_ms, call_sid=sid(91))
    position_1 = CONFIG.prompts.queue_position["en"].format(position=1)
    joins = {}
    for n in (1, 2):  # both hear the announcement before either has joined
        announced = before_queue(client, n)
        assert position_1 in texts(announced)
        joins[n] = announced.find("Redirect").text
    for n in (1, 2):  # then both stay on the line: the Redirect joins them
        parse(signed_post(client, joins[n], call_form(sid(n))))
    assert routing.position(sid(2), "payment", "en") == 2
    first = texts(hold(client, 1))
    second = texts(hold(client, 2))
    assert first == [CONFIG.prompts.hold["en"]]  # told right: only welcomed
    assert second[0] == CONFIG.prompts.queue_position["en"].format(position=2)
    # Corrected once; the next turn (same place) says nothing new.
    clock.advance(5)
    assert texts(hold(client, 2)) == []


def _estimate_for_ahead(ahead: int, staffed: int, busy: int) -> float:
    return estimate_wait(
        QueueSnapshot(ahead, staffed, busy, HANDLE_TIME.prior_s, 1 / ABANDONMENT.prior_patience_s)
    ).point_s


def test_callers_in_other_lines_who_take_the_same_agent_first_count_in_the_wait(app, client, clock):
    """Sato (a101) is the only agent on duty, busy, with three Japanese payment callers waiting.
    An English payment caller is number 1 in the English line, but the matching gives Sato the
    three who arrived first: their wait is that of the fourth caller, not of the first."""
    routing = app.extensions["hotline"].routing
    routing.set_agent_status("a101", "busy", int(clock.now.timestamp() * 1000), call_sid=sid(90))
    for n in (1, 2, 3):
        clock.advance(5)
        queue_caller(client, "/voice/ja/node/payment/choice?attempt=1", call_form(sid(n), Digits="0"))
    clock.advance(5)
    now_s = clock.now.timestamp()
    new_english = estimate_for(routing, CONFIG, None, "payment", "en", now_s)
    assert new_english.position == 1  # still number 1 in its own line
    assert new_english.estimate.point_s == pytest.approx(_estimate_for_ahead(3, 1, 1))
    assert new_english.estimate.point_s > _estimate_for_ahead(0, 1, 1)

    queue_caller(client, "/voice/en/node/payment/choice?attempt=1", call_form(sid(4), Digits="0"))
    clock.advance(5)
    queue_caller(client, "/voice/ja/node/payment/choice?attempt=1", call_form(sid(5), Digits="0"))
    seated = estimate_for(routing, CONFIG, sid(4), "payment", "en", clock.now.timestamp())
    assert seated.estimate.point_s == pytest.approx(_estimate_for_ahead(3, 1, 1))  # not the one behind


def test_a_rival_line_with_agents_of_its_own_counts_only_in_part(app, client, clock):
    """With Wang (a102, Japanese and Mandarin) also on duty for the Japanese line, half of its
    callers go to her: the English caller waits behind about half of them."""
    routing = app.extensions["hotline"].routing
    now_ms = int(clock.now.timestamp() * 1000)
    routing.set_agent_status("a101", "busy", now_ms, call_sid=sid(90))
    routing.set_agent_status("a102", "busy", now_ms, call_sid=sid(91))
    for n in (1, 2, 3, 4):
        clock.advance(5)
        queue_caller(client, "/voice/ja/node/payment/choice?attempt=1", call_form(sid(n), Digits="0"))
    new_english = estimate_for(routing, CONFIG, None, "payment", "en", clock.now.timestamp() + 5)
    assert new_english.estimate.point_s == pytest.approx(_estimate_for_ahead(2, 1, 1))
