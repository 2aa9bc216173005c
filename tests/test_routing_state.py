"""Routing state in a real Redis: order, places kept, and atomic matching under races."""

from __future__ import annotations

import threading

import pytest
import redis as redis_lib

from ivr.menus.loader import load_config
from ivr.queues.lines import agent_lines, agents_for
from ivr.queues.state import RoutingState, Seat
from tests.conftest import SHIPPED_CONFIG

CONFIG = load_config(SHIPPED_CONFIG)
T0 = 1_764_000_000_000  # ms


@pytest.fixture
def state(redis_url) -> RoutingState:
    return RoutingState(redis_lib.Redis.from_url(redis_url))


def sid(n: int) -> str:
    return f"CA{n:032x}"


def test_positions_follow_arrival_and_a_retried_join_keeps_its_place(state):
    for n in range(3):
        assert state.join(Seat(sid(n), "payment", "ja", T0 + n)) == n + 1
    assert state.join(Seat(sid(0), "payment", "ja", T0 + 99)) == 1  # a retry: same place
    assert state.position(sid(2), "payment", "ja") == 3
    assert state.waiting("payment", ["ja", "en"]) == {"ja": (3, T0), "en": (0, None)}
    state.leave(sid(0))
    assert state.position(sid(2), "payment", "ja") == 2
    assert state.leave(sid(0)) is None


def test_longest_idle_agent_gets_the_longest_waiting_caller(state):
    lines = {"a": [("payment", "ja", 0)], "b": [("payment", "ja", 0)]}
    state.set_agent_status("a", "available", T0 + 50)
    state.set_agent_status("b", "available", T0 + 10)  # idle longer
    state.join(Seat(sid(2), "payment", "ja", T0 + 2))
    state.join(Seat(sid(1), "payment", "ja", T0 + 1))
    matches = state.match(lines, T0 + 100)
    assert [(m.agent_id, m.call_sid) for m in matches] == [("b", sid(1)), ("a", sid(2))]
    assert {a: s for a, (s, _, _) in state.agents().items()} == {"a": "reserved", "b": "reserved"}
    assert state.match(lines, T0 + 101) == []


def test_priority_wins_over_arrival_for_agents_who_serve_both(state):
    lines = {"a": [("payment", "en", 0), ("urgent", "en", 9)]}
    state.join(Seat(sid(1), "payment", "en", T0))
    state.join(Seat(sid(2), "urgent", "en", T0 + 500))
    state.set_agent_status("a", "available", T0)
    assert [m.call_sid for m in state.match(lines, T0 + 600)] == [sid(2)]


def test_agents_only_take_callers_they_can_serve(state):
    lines = agent_lines(CONFIG)
    assert ("complaint", "en", 0) not in lines["a101"]  # Sato has no complaint skill
    assert set(agents_for(CONFIG, "payment", "zh")) == {"a102"}
    state.join(Seat(sid(1), "payment", "zh", T0))
    for agent in lines:
        state.set_agent_status(agent, "available", T0)
    assert [(m.agent_id, m.queue, m.lang) for m in state.match(lines, T0 + 1)] == [("a102", "payment", "zh")]


def test_away_and_offline_agents_get_no_one(state):
    lines = {"a": [("refund", "ja", 0)]}
    state.join(Seat(sid(1), "refund", "ja", T0))
    for status in ("away", "offline", "busy", "wrap_up"):
        state.set_agent_status("a", status, T0)
        assert state.match(lines, T0) == []
    with pytest.raises(ValueError):
        state.set_agent_status("a", "sleeping", T0)


def test_a_status_change_stamped_in_the_past_does_not_make_an_agent_look_idle_for_longer(state):
    """A webhook handled by a host whose clock is behind (or the simulator's `--at` against a
    running hotline) releases an agent: their idle time starts at the latest of the two."""
    lines = {"a": [("payment", "ja", 0)], "b": [("payment", "ja", 0)]}
    state.set_agent_status("a", "available", T0 + 500)
    state.join(Seat(sid(1), "payment", "ja", T0 + 1))
    [match] = state.match(lines, T0 + 1000)
    assert match.agent_id == "a"
    day_before = T0 - 24 * 3_600_000
    assert state.transition("a", sid(1), ["reserved"], "available", day_before)
    assert state.agents()["a"][:2] == ("available", T0 + 1000)
    state.set_agent_status("b", "available", T0 + 900)  # idle longer than a, truly
    state.join(Seat(sid(2), "payment", "ja", T0 + 2))
    assert [m.agent_id for m in state.match(lines, T0 + 2000)] == ["b"]


def test_a_caller_whose_agent_did_not_answer_keeps_their_place(state):
    lines = {"a": [("account", "en", 0)]}
    for n in range(1, 4):
        state.join(Seat(sid(n), "account", "en", T0 + n))
    state.set_agent_status("a", "available", T0)
    assert state.match(lines, T0 + 10)[0].call_sid == sid(1)
    state.set_agent_status("a", "away", T0 + 40)  # no answer: the agent is set away
    assert state.back_to_line(sid(1)) == 1  # and the caller is first again
    assert state.position(sid(3), "account", "en") == 3


@pytest.mark.parametrize("processes", [1, 2])
def test_racing_matchers_never_double_book(redis_url, processes):
    """Many threads (over one or two separate connections pools, as separate app processes
    would have) match 40 agents with 200 callers at once."""
    clients = [redis_lib.Redis.from_url(redis_url) for _ in range(processes)]
    setup = RoutingState(clients[0])
    agents = {f"ag{n}": [("payment", "ja", 0), ("urgent", "ja", 9)] for n in range(40)}
    for n in range(200):
        setup.join(Seat(sid(n), "urgent" if n % 7 == 0 else "payment", "ja", T0 + n))
    for n, agent in enumerate(agents):
        setup.set_agent_status(agent, "available", T0 + n)
    results: list = []
    barrier = threading.Barrier(16)

    def race(k: int) -> None:
        state = RoutingState(clients[k % processes])
        barrier.wait()
        for _ in range(5):
            results.extend(state.match(agents, T0 + 1000))

    threads = [threading.Thread(target=race, args=(k,)) for k in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 40
    assert len({m.agent_id for m in results}) == 40
    assert len({m.call_sid for m in results}) == 40
    urgent = [m for m in results if m.queue == "urgent"]
    assert len(urgent) == len([n for n in range(200) if n % 7 == 0])  # all 29 urgent callers first
    assert setup.waiting("payment", ["ja"])["ja"][0] == 200 - 40


def test_transferred_callers_join_our_line_and_leave_it_when_they_go(app, client, clock):
    from tests.twiml import call_form, parse, queue_caller, signed_post

    routing = app.extensions["hotline"].routing
    sids = [sid(100 + n) for n in range(3)]
    for call_sid in sids:
        clock.advance(1)
        queue_caller(client, "/voice/en/node/payment/choice?attempt=1", call_form(call_sid, Digits="0"))
    assert [routing.position(s, "payment", "en") for s in sids] == [1, 2, 3]
    # The first hangs up while queued (Enqueue action), the second's completed status arrives
    # without any Enqueue action: both leave the line.
    form = call_form(sids[0], QueueResult="hangup", QueueTime="30", CallStatus="completed")
    parse(signed_post(client, "/voice/en/node/agent_payment/queued", form))
    status = call_form(sids[1], CallStatus="completed", CallDuration="90", SequenceNumber="2")
    assert signed_post(client, "/voice/status", status).status_code == 204
    assert [routing.position(s, "payment", "en") for s in sids] == [None, None, 1]


def test_a_hang_up_that_overtakes_the_transfer_leaves_no_ghost_in_line(app, client):
    from tests.twiml import call_form, parse, signed_post

    routing = app.extensions["hotline"].routing
    signed_post(client, "/voice/status", call_form(sid(300), CallStatus="completed", CallDuration="9"))
    parse(signed_post(client, "/voice/en/node/refund/choice?attempt=1", call_form(sid(300), Digits="3")))
    assert routing.seat(sid(300)) is None and routing.waiting("refund", ["en"])["en"] == (0, None)


def test_a_waiting_caller_missing_from_our_line_is_seated_at_the_next_hold_turn(app, client):
    from tests.twiml import call_form, parse, signed_post

    routing = app.extensions["hotline"].routing
    parse(signed_post(client, "/voice/en/hold/refund", call_form(sid(301), CallStatus="ringing")))
    assert routing.position(sid(301), "refund", "en") == 1


def test_a_live_caller_behind_hundreds_of_callbacks_that_cannot_be_dialled_is_served(state):
    """Callbacks that may not be dialled (closed, or no caller ID to dial from) are passed over,
    however many wait at the head of the line."""
    for n in range(450):
        state.join(Seat(f"cb:{n}", "payment", "ja", T0 + n))
    state.join(Seat(sid(1), "payment", "ja", T0 + 1000))
    state.set_agent_status("a", "available", T0)
    [match] = state.match({"a": [("payment", "ja", 0)]}, T0 + 2000, callbacks_ok=False)
    assert match.call_sid == sid(1)
    assert state.position("cb:0", "payment", "ja") == 1  # the callbacks keep their places
