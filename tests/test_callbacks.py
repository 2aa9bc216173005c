"""Callbacks that keep the caller's place: the offers, the number, the seat in line, the dial
(Twilio's REST API faked at HTTP with `responses`), retries, failure, after hours, ops."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import parse_qs

import pytest
import requests
import responses
import yaml
from rq import SimpleWorker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from callbacks.dialer import (
    PACED_EARLY_S,
    place_callback,
    seat_callback,
    seconds_until,
    send_failure_sms,
    take_dial_slot,
)
from callbacks.dispatcher import dispatch_once
from callbacks.tickets import seed_reference_floor
from ivr.calllog import events_key
from ivr.menus.loader import load_config
from ivr.queues.callbacks import Callback, member
from ivr.queues.state import waiting_key
from tests.conftest import ACCOUNT_SID, BASE_URL, CLOSED_TIME, OPS_TOKEN, SHIPPED_CONFIG
from tests.test_agent_console import auth
from tests.twiml import call_form, parse, queue_caller, says, signed_post, verbs

CONFIG = load_config(SHIPPED_CONFIG)
PROMPTS = CONFIG.prompts
CALLS_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
MESSAGES_URL = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
HOTLINE_NUMBER = "+815012345678"
OPS = {"Authorization": f"Bearer {OPS_TOKEN}"}
TRANSFER = "/voice/en/node/payment/choice?attempt=1"  # the agent key in the payment menu
OFFER_CHOICE = "/voice/en/node/agent_payment/choice?attempt=1"


def sid(n: int) -> str:
    return f"CA{n:032x}"


def out_sid(n: int) -> str:
    return f"CA{0xB000 + n:032x}"


@pytest.fixture
def app(make_app, sleeps):
    return make_app(TWILIO_CALLER_ID=HOTLINE_NUMBER, SLEEP=sleeps)


def app_with_callbacks(make_app, tmp_path, sleeps, **settings):
    """An app on a copy of the shipped config with these `callbacks:` settings changed."""
    data = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    data["callbacks"].update(settings)
    path = tmp_path / "hotline.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return make_app(HOTLINE_CONFIG=str(path), TWILIO_CALLER_ID=HOTLINE_NUMBER, SLEEP=sleeps)


def now_ms(clock) -> int:
    return int(clock.now.timestamp() * 1000)


def texts(root) -> list[str]:
    return [s.text for s in says(root)]


def step(client, path: str, n: int, **form):
    return parse(signed_post(client, path, call_form(sid(n), **form)))


def book_with_caller_id(client, n: int, frm: str = "+819012345678", branch: str = "payment", offer: str | None = None):
    """Caller n asks for the agent (in the branch's menu), hears the callback offer (`offer`:
    another than the plain one), takes it, keeps their caller ID."""
    step(client, "/voice/incoming", n, From=frm)
    root = step(client, f"/voice/en/node/{branch}/choice?attempt=1", n, Digits="0", From=frm)
    assert (offer or PROMPTS.callback_offer["en"].format(key="2")) in texts(root)
    root = step(client, f"/voice/en/node/agent_{branch}/choice?attempt=1", n, Digits="2", From=frm)
    assert texts(root) == [PROMPTS.callback_use_caller_id["en"].format(last4=" ".join(frm[-4:]))]
    return step(client, "/voice/en/callback/number/answer?attempt=1", n, Digits="1", From=frm)


def run_routing(app) -> None:
    """One dispatcher pass, then the routing and callback jobs, with a real RQ worker (in-process,
    burst), listening as the hotline's worker does."""
    with app.app_context():
        hotline = app.extensions["hotline"]
        dispatch_once()
        queues = [hotline.routing_queue, hotline.callbacks_queue]
        SimpleWorker(queues, connection=hotline.redis).work(burst=True)


def book_and_dial(app, client, clock, hotline, mock, offer: str | None = None):
    """Caller 1 books with their caller ID, Emma (a103) is free: the router reserves her and the
    job dials the customer. Returns the callback."""
    book_with_caller_id(client, 1, offer=offer)
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    expect_dial(mock, 1)
    run_routing(app)
    return callback


def stored_callback(hotline, n: int, asked_ms: int, status: str = "pending", queue: str = "payment", **more):
    """Callback n stored directly (no call behind it), asked for and arriving at `asked_ms`."""
    callback, _ = hotline.callbacks.request(
        Callback(
            id="",
            status=status,
            number=f"+8190{n:08d}",
            call_sid=sid(5000 + n),
            lang="en",
            queue=queue,
            node=f"agent_{queue}",
            branch=queue,
            arrived_ms=asked_ms,
            requested_ms=asked_ms,
            **more,
        )
    )
    return callback


def book_for_another_number(client, n: int, frm: str, digits: str):
    """Caller n (from `frm`) asks for the agent in the payment menu, takes the callback offer and
    books it for another number (`digits`, confirmed). Returns the last TwiML."""
    step(client, "/voice/incoming", n, From=frm)
    step(client, TRANSFER, n, Digits="0", From=frm)
    step(client, OFFER_CHOICE, n, Digits="2", From=frm)
    step(client, "/voice/en/callback/number/answer?attempt=1", n, Digits="2", From=frm)
    step(client, "/voice/en/callback/entry/answer?attempt=1", n, Digits=digits, From=frm)
    return step(client, "/voice/en/callback/readback/answer?attempt=1", n, Digits="1", From=frm)


def run_rq_retry(hotline) -> None:
    """The one job RQ scheduled for a retry, run now (inside an app context)."""
    queue = hotline.callbacks_queue
    registry = ScheduledJobRegistry(queue=queue)
    [retry] = registry.get_job_ids()
    registry.remove(retry)
    queue.enqueue_job(queue.fetch_job(retry))
    SimpleWorker([queue], connection=hotline.redis).work(burst=True)


def run_due_scheduled(app, clock, run: bool = True) -> int:
    """What RQ's scheduler does, on the test's clock: enqueue scheduled jobs now due, and (with
    `run`) run them."""
    with app.app_context():
        hotline = app.extensions["hotline"]
        queue = hotline.callbacks_queue
        registry = ScheduledJobRegistry(queue=queue)
        due = registry.get_jobs_to_schedule(clock.now.timestamp())
        for job_id in due:
            registry.remove(job_id)
            queue.enqueue_job(queue.fetch_job(job_id))
        if run:
            SimpleWorker([queue], connection=hotline.redis).work(burst=True)
        return len(due)


def scheduled_times(app) -> list[datetime]:
    with app.app_context():
        registry = ScheduledJobRegistry(queue=app.extensions["hotline"].callbacks_queue)
        return sorted(registry.get_scheduled_time(job_id) for job_id in registry.get_job_ids())


def dials(mock) -> list[dict]:
    return [parse_qs(c.request.body) for c in mock.calls if c.request.method == "POST" and c.request.url == CALLS_URL]


def expect_dial(mock, n: int) -> None:
    mock.add(responses.POST, CALLS_URL, status=201, json={"sid": out_sid(n), "status": "queued"})


def the_callback(hotline, number: str = "+819012345678"):
    callback = hotline.callbacks.open_for(number)
    assert callback is not None
    return callback


# ----- taking the offer ------------------------------------------------------------------


@pytest.mark.any_database  # the callback block on the ticket, in both stores
def test_a_peak_caller_books_a_callback_with_their_caller_id(app, client, clock, hotline, ticket_for):
    root = book_with_caller_id(client, 1)
    assert verbs(root) == ["Say", "Say", "Hangup"]
    reference = hotline.calls.reference(sid(1))
    assert texts(root)[0] == PROMPTS.callback_booked["en"].format(
        last4="5 6 7 8", position=1, reference=" ".join(str(reference))
    )
    callback = the_callback(hotline)
    assert (callback.status, callback.queue, callback.lang, callback.branch) == ("pending", "payment", "en", "payment")
    assert hotline.redis.zscore(waiting_key("payment", "en"), member(callback.id)) == now_ms(clock)

    signed_post(client, "/voice/status", call_form(sid(1), CallStatus="completed", CallDuration="60"))
    ticket = ticket_for(sid(1))
    assert ticket["outcome"] == "callback"
    block = ticket["callback"]
    assert (block["id"], block["number"], block["status"], block["attempts"]) == (
        callback.id,
        "+819012345678",
        "pending",
        [],
    )
    assert [p["node"] for p in ticket["path"]][-2:] == ["agent_payment", "callback_number"]


@pytest.mark.any_database  # the floor is read from the tickets, in both stores
def test_a_redis_that_lost_its_data_hands_out_no_callback_id_a_ticket_already_has(app, client, hotline, ticket_for):
    """Without AOF (or with it lost) Redis starts from nothing: the next callback must not be
    'callback 1' again while a ticket, and the ops who read it, know callback 1 as another's."""
    book_with_caller_id(client, 1)
    first = the_callback(hotline)
    signed_post(client, "/voice/status", call_form(sid(1), CallStatus="completed", CallDuration="60"))
    before = ticket_for(sid(1))
    assert before["callback"]["id"] == first.id
    hotline.redis.flushdb()
    with app.app_context():
        seed_reference_floor()  # what a worker, `make run` and `db-upgrade` do as they start
    book_with_caller_id(client, 2, frm="+819011112222")
    second = the_callback(hotline, "+819011112222")
    assert int(second.id) > int(first.id)
    assert hotline.calls.reference(sid(2)) > before["id"]


def test_another_number_is_normalised_read_back_and_invalid_ones_refused(app, client, hotline, ticket_for):
    step(client, TRANSFER, 2, Digits="0")
    step(client, OFFER_CHOICE, 2, Digits="2")
    root = step(client, "/voice/en/callback/number/answer?attempt=1", 2, Digits="2")
    gather = root.find("Gather")
    assert gather.get("finishOnKey") == "#" and gather.get("action") == "/voice/en/callback/entry/answer?attempt=1"
    assert root.find("Redirect").text == "/voice/en/callback/entry/silence?attempt=1"
    # A premium-rate number (0570 navi dial) is not a number we call back.
    root = step(client, "/voice/en/callback/entry/answer?attempt=1", 2, Digits="0570012345")
    assert texts(root) == [PROMPTS.callback_invalid_number["en"], PROMPTS.callback_enter_number["en"]]
    # The hotline's own number (the one dialled, +815012345678): a callback would ring our menus.
    root = step(client, "/voice/en/callback/entry/answer?attempt=2", 2, Digits="05012345678")
    assert texts(root) == [PROMPTS.callback_invalid_number["en"], PROMPTS.callback_enter_number["en"]]
    root = step(client, "/voice/en/callback/entry/answer?attempt=2", 2, Digits="08055501234")
    assert texts(root) == [PROMPTS.callback_readback["en"].format(digits="0 8 0, 5 5 5 0, 1 2 3 4")]
    assert root.find("Gather").get("action") == "/voice/en/callback/readback/answer?attempt=1"
    root = step(client, "/voice/en/callback/readback/answer?attempt=1", 2, Digits="1")
    assert "ending in 1 2 3 4" in texts(root)[0]
    assert the_callback(hotline, "+818055501234").call_sid == sid(2)
    # None to the caller's own number; theirs is found through it, though.
    assert hotline.callbacks.open_for("+819012345678").number == "+818055501234"

    # Calling again from the phone that asked: told about the callback to the other number.
    root = step(client, "/voice/incoming", 9)
    assert texts(root) == [PROMPTS.greeting["en"], PROMPTS.callback_pending["en"].format(last4="1 2 3 4")]

    signed_post(client, "/voice/status", call_form(sid(2), CallStatus="completed"))
    ticket = ticket_for(sid(2))
    entries = [i for p in ticket["path"] if p["node"] == "callback_entry" for i in p["inputs"]]
    assert [i["input"] for i in entries] == ["[redacted]"] * 3  # never the digits
    assert ticket["callback"]["number"] == "+818055501234"


def test_the_number_our_callbacks_come_from_is_not_a_callback_number(client):
    """A second hotline number (To) forwarding here: TWILIO_CALLER_ID, the number callbacks are
    dialled from, is still ours, and so is the number dialled."""
    other_line = "+81355550000"
    step(client, TRANSFER, 7, Digits="0", To=other_line)
    step(client, OFFER_CHOICE, 7, Digits="2", To=other_line)
    step(client, "/voice/en/callback/number/answer?attempt=1", 7, Digits="2", To=other_line)
    for attempt, ours in enumerate(("05012345678", "0355550000"), start=1):
        root = step(client, f"/voice/en/callback/entry/answer?attempt={attempt}", 7, Digits=ours, To=other_line)
        assert texts(root) == [PROMPTS.callback_invalid_number["en"], PROMPTS.callback_enter_number["en"]], ours


def test_a_withheld_caller_id_goes_straight_to_entering_a_number(client):
    step(client, TRANSFER, 3, Digits="0", From="anonymous")
    root = step(client, OFFER_CHOICE, 3, Digits="2", From="anonymous")
    assert texts(root) == [PROMPTS.callback_enter_number["en"]]


def test_silence_and_wrong_keys_are_answered_and_finally_the_caller_is_queued(client, hotline):
    step(client, TRANSFER, 4, Digits="0")
    step(client, OFFER_CHOICE, 4, Digits="2")
    root = step(client, "/voice/en/callback/number/silence?attempt=1", 4)
    assert texts(root)[0] == PROMPTS.no_input["en"]
    root = step(client, "/voice/en/callback/number/answer?attempt=2", 4, Digits="7")
    assert texts(root)[0] == PROMPTS.invalid_option["en"]
    root = step(client, "/voice/en/callback/number/silence?attempt=3", 4)
    # No number after three tries: into the queue they were about to join, with a word first.
    assert verbs(root) == ["Say", "Enqueue"] and root.find("Enqueue").text == "payment"
    assert texts(root) == [PROMPTS.callback_no_number["en"]]  # about the number, not "your choice"
    assert hotline.routing.position(sid(4), "payment", "en") == 1
    assert hotline.callbacks.open_for("+819012345678") is None


def test_a_number_entry_of_just_the_pound_key_is_no_input_not_a_wrong_number(client):
    step(client, TRANSFER, 3, Digits="0", From="anonymous")
    step(client, OFFER_CHOICE, 3, Digits="2", From="anonymous")
    root = step(client, "/voice/en/callback/entry/answer?attempt=1", 3, Digits="", From="anonymous")
    assert texts(root) == [PROMPTS.no_input["en"], PROMPTS.callback_enter_number["en"]]
    assert root.find("Gather").get("action") == "/voice/en/callback/entry/answer?attempt=2"


def test_a_waiting_caller_takes_the_offer_and_keeps_their_place(app, client, clock, hotline):
    for n in (1, 2, 3):
        clock.advance(10)
        queue_caller(client, TRANSFER, call_form(sid(n), Digits="0", From=f"+81901234567{n}"))
    arrived = hotline.routing.seat(sid(2)).arrived_ms
    clock.advance(300)
    # Caller 2's hold turn offers the callback; they press the key during the music.
    root = parse(signed_post(client, "/voice/en/hold/payment", call_form(sid(2), From="+819012345672")))
    assert root.find("Gather").get("action") == "/voice/en/hold/payment/key"
    root = parse(signed_post(client, "/voice/en/hold/payment/key", call_form(sid(2), Digits="99999")))
    assert verbs(root) == ["Say"] and texts(root) == [PROMPTS.invalid_option["en"]]  # then the hold loop
    assert hotline.routing.position(sid(2), "payment", "en") == 2
    root = parse(signed_post(client, "/voice/en/hold/payment/key", call_form(sid(2), Digits="2")))
    assert verbs(root) == ["Leave"]
    leave = call_form(sid(2), QueueResult="leave", QueueTime="310", From="+819012345672")
    root = parse(signed_post(client, "/voice/en/node/agent_payment/queued", leave))
    assert texts(root) == [PROMPTS.callback_use_caller_id["en"].format(last4="5 6 7 2")]
    root = step(client, "/voice/en/callback/number/answer?attempt=1", 2, Digits="1", From="+819012345672")
    assert texts(root)[0].startswith("Thank you.") and "you are number 2" in texts(root)[0]

    callback = the_callback(hotline, "+819012345672")
    line = [m.decode() for m in hotline.redis.zrange(waiting_key("payment", "en"), 0, -1)]
    assert line == [sid(1), member(callback.id), sid(3)]
    assert callback.arrived_ms == arrived  # the original arrival, not the time of the request
    # Everyone behind counts the callback: caller 3 is still third.
    assert hotline.routing.position(sid(3), "payment", "en") == 3


def test_a_waiting_caller_who_leaves_for_the_offer_and_hangs_up_giving_a_number_abandoned(
    client, clock, hotline, ticket_for
):
    """Out of the line for the callback offer, gone before booking one: an abandoned call (the
    waiting-time figures count it), not one that hung up in a menu."""
    queue_caller(client, TRANSFER, call_form(sid(5), Digits="0"))
    clock.advance(300)
    signed_post(client, "/voice/en/hold/payment", call_form(sid(5)))
    assert verbs(parse(signed_post(client, "/voice/en/hold/payment/key", call_form(sid(5), Digits="2")))) == ["Leave"]
    leave = call_form(sid(5), QueueResult="leave", QueueTime="300")
    parse(signed_post(client, "/voice/en/node/agent_payment/queued", leave))
    step(client, "/voice/en/callback/number/answer?attempt=1", 5, Digits="2")  # another number...
    signed_post(client, "/voice/status", call_form(sid(5), CallStatus="completed", CallDuration="330"))
    ticket = ticket_for(sid(5))
    assert (ticket["outcome"], ticket["queue"]["result"]) == ("abandoned", "leave")
    assert hotline.routing.seat(sid(5)) is None and hotline.callbacks.open_for("+819012345678") is None


def test_a_caller_out_of_the_line_who_goes_on_in_the_menus_is_not_abandoned(client, clock, hotline, ticket_for):
    """Left the line for the offer, but the booking was lost (its draft gone: a Redis blip) and
    they went on to the main menu and got their answer there: self-service, not abandoned."""
    from ivr.queues.callbacks import draft_key

    queue_caller(client, TRANSFER, call_form(sid(6), Digits="0"))
    clock.advance(300)
    signed_post(client, "/voice/en/hold/payment", call_form(sid(6)))
    signed_post(client, "/voice/en/hold/payment/key", call_form(sid(6), Digits="2"))
    hotline.redis.delete(draft_key(sid(6)))
    clock.advance(1)
    root = parse(signed_post(client, "/voice/en/node/agent_payment/queued", call_form(sid(6), QueueResult="leave")))
    assert root.find("Gather").get("action") == f"/voice/en/node/{CONFIG.menu.root}/choice?attempt=1"
    clock.advance(5)
    step(client, f"/voice/en/node/{CONFIG.menu.root}/choice?attempt=1", 6, Digits="3")  # refunds
    clock.advance(5)
    step(client, "/voice/en/node/refund/choice?attempt=1", 6, Digits="2")  # refund status: an answer
    signed_post(client, "/voice/status", call_form(sid(6), CallStatus="completed", CallDuration="330"))
    assert ticket_for(sid(6))["outcome"] == "self_service"


def test_wrong_keys_at_the_offer_before_queuing_count_and_finally_queue_the_caller(client, hotline):
    root = step(client, TRANSFER, 4, Digits="0")
    assert root.find("Gather").get("action") == OFFER_CHOICE
    for attempt in (1, 2):
        root = step(client, f"/voice/en/node/agent_payment/choice?attempt={attempt}", 4, Digits="7")
        assert texts(root)[0] == PROMPTS.invalid_option["en"]
        assert PROMPTS.callback_offer["en"].format(key="2") in texts(root)  # offered again
        assert root.find("Gather").get("action") == f"/voice/en/node/agent_payment/choice?attempt={attempt + 1}"
        assert root.find("Redirect").text == "/voice/en/node/agent_payment/join?queue=payment"
    # The third wrong key: no more offers, into the queue they asked for.
    root = step(client, "/voice/en/node/agent_payment/choice?attempt=3", 4, Digits="7")
    assert verbs(root) == ["Enqueue"] and root.find("Enqueue").text == "payment"
    assert hotline.routing.position(sid(4), "payment", "en") == 1


def test_an_empty_answer_at_the_offer_before_queuing_queues_the_caller(client, hotline):
    """The actionOnEmptyResult reading of a silent Gather: as the Redirect after it would."""
    step(client, TRANSFER, 4, Digits="0")
    root = step(client, OFFER_CHOICE, 4)
    assert verbs(root) == ["Enqueue"] and root.find("Enqueue").text == "payment"
    assert hotline.routing.position(sid(4), "payment", "en") == 1


def test_a_second_request_for_the_same_number_updates_the_pending_one(client, hotline):
    book_with_caller_id(client, 1)
    first = the_callback(hotline)
    book_with_caller_id(client, 2)
    second = the_callback(hotline)
    assert second.id == first.id and second.arrived_ms == first.arrived_ms
    assert len(hotline.callbacks.listing()) == 1
    assert hotline.redis.zcard(waiting_key("payment", "en")) == 1


def test_asking_again_about_something_else_moves_the_callback_to_that_line_at_its_arrival(client, clock, hotline):
    book_with_caller_id(client, 1)
    first = the_callback(hotline)
    clock.advance(120)
    book_with_caller_id(client, 2, branch="refund")  # the same caller, now about a refund
    moved = the_callback(hotline)
    assert (moved.id, moved.arrived_ms) == (first.id, first.arrived_ms)
    assert (moved.queue, moved.branch, moved.node) == ("refund", "refund", "agent_refund")
    assert hotline.redis.zcard(waiting_key("payment", "en")) == 0
    assert hotline.routing.position(member(moved.id), "refund", "en") == 1
    assert hotline.routing.seat(member(moved.id)).queue == "refund"


def test_someone_else_asking_for_the_same_number_is_told_of_it_when_they_phone(client, hotline):
    book_with_caller_id(client, 1)
    # A second phone books a callback to the first one's number.
    frm = "+819055550000"
    book_for_another_number(client, 2, frm, "09012345678")
    callback = the_callback(hotline)
    assert sid(2) in callback.calls and len(hotline.callbacks.listing()) == 1
    # When that second phone calls again, it hears about the callback it asked for.
    root = step(client, "/voice/incoming", 3, From=frm)
    assert root.find("Gather").get("action") == f"/voice/en/callback/pending/{callback.id}"


def test_a_caller_with_a_pending_callback_may_keep_or_cancel_it(app, client, hotline, ticket_for):
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    root = step(client, "/voice/incoming", 5)
    assert texts(root) == [PROMPTS.greeting["en"], PROMPTS.callback_pending["en"].format(last4="5 6 7 8")]
    assert root.find("Gather").get("action") == f"/voice/en/callback/pending/{callback.id}"
    assert root.find("Redirect").text == "/voice/en/callback/pending-continue"
    root = step(client, f"/voice/en/callback/pending/{callback.id}", 5, Digits="1")
    assert texts(root)[0] == PROMPTS.callback_kept["en"] and verbs(root)[-1] == "Hangup"
    assert the_callback(hotline).status == "pending"
    signed_post(client, "/voice/status", call_form(sid(5), CallStatus="completed"))
    kept = ticket_for(sid(5))
    assert kept["outcome"] == "callback" and kept["language"] == "en"  # the call was about its callback
    assert kept["callback"] == {"id": callback.id, "role": "pending_noticed", "answer": "kept"}

    # Another key than keep or cancel: maybe not their language, so the language choice;
    # greeted in English already, so choosing English does not greet again.
    step(client, "/voice/incoming", 8)
    root = step(client, f"/voice/en/callback/pending/{callback.id}", 8, Digits="5")
    assert root.find("Gather").get("action") == "/voice/en/language?attempt=1"
    root = step(client, "/voice/en/language/silence?attempt=1", 8)
    assert root.find("Gather").get("action") == "/voice/en/language?attempt=2"
    root = step(client, "/voice/en/language?attempt=2", 8, Digits="3")
    assert PROMPTS.greeting["en"] not in texts(root)
    assert texts(root)[0] == CONFIG.menu.nodes[CONFIG.menu.root].prompt["en"]
    assert hotline.callbacks.get(callback.id).status == "pending"

    step(client, "/voice/incoming", 6)
    root = step(client, f"/voice/en/callback/pending/{callback.id}", 6, Digits="2")
    # Answered in English: on to the English main menu, no language choice again.
    assert texts(root) == [PROMPTS.callback_cancelled["en"], CONFIG.menu.nodes[CONFIG.menu.root].prompt["en"]]
    assert root.find("Gather").get("action") == f"/voice/en/node/{CONFIG.menu.root}/choice?attempt=1"
    assert hotline.callbacks.get(callback.id).status == "cancelled"
    assert hotline.redis.zcard(waiting_key("payment", "en")) == 0
    # With nothing pending, the next call starts as usual.
    assert step(client, "/voice/incoming", 7).find("Gather").get("action") == "/voice/language?attempt=1"


def test_a_callback_still_in_line_at_closing_is_promised_for_the_opening_not_for_now(app, client, clock, hotline):
    """Booked while open, not yet called back when the line closed (it stays in line for the
    opening): whoever asks about it meanwhile hears it comes after the opening."""
    from tests.conftest import CLOSED_TIME

    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    clock.now = CLOSED_TIME  # Saturday 22:00 in Tokyo; opens Monday at 9:00
    opening = "on Monday, November 30, at 9 AM"
    step(client, "/voice/incoming", 5)
    root = step(client, f"/voice/en/callback/pending/{callback.id}", 5, Digits="1")
    assert texts(root)[0] == PROMPTS.callback_kept_scheduled["en"].format(opening=opening)
    # Asked again for the same number from another phone, on the closed line:
    root = book_for_another_number(client, 6, "+819055556666", "09012345678")
    reference = " ".join(str(callback.reference))
    assert texts(root)[0] == PROMPTS.callback_booked_closed["en"].format(
        last4="5 6 7 8", opening=opening, reference=reference
    )
    assert the_callback(hotline).status == "pending" and the_callback(hotline).id == callback.id


def test_a_wait_past_closing_offers_a_callback_at_the_callers_turn_or_after_the_next_opening(
    app, client, clock, hotline, no_unexpected_http
):
    clock.now = datetime(2026, 11, 24, 10, 57, tzinfo=UTC)  # Tuesday 19:57 in Tokyo; closes at 20:00
    for agent, n in (("a101", 90), ("a103", 91)):
        hotline.routing.set_agent_status(agent, "busy", now_ms(clock), call_sid=sid(n))
    frm = "+819012345678"
    step(client, "/voice/incoming", 1, From=frm)
    root = step(client, TRANSFER, 1, Digits="0", From=frm)
    opening = "tomorrow, Wednesday, at 9 AM"  # the opening after tonight's closing, said in English
    said = texts(root)
    assert PROMPTS.closing_soon["en"].format(time="8 PM") in said
    assert PROMPTS.callback_offer_past_closing["en"].format(key="2", opening=opening) in said
    assert PROMPTS.callback_offer["en"].format(key="2") not in said
    step(client, OFFER_CHOICE, 1, Digits="2", From=frm)
    root = step(client, "/voice/en/callback/number/answer?attempt=1", 1, Digits="1", From=frm)
    reference = " ".join(str(hotline.calls.reference(sid(1))))
    assert texts(root)[0] == PROMPTS.callback_booked_past_closing["en"].format(
        last4="5 6 7 8", position=1, opening=opening, reference=reference
    )
    callback = the_callback(hotline)
    assert callback.status == "pending"  # in line: called at its turn if that comes before 20:00
    clock.now = datetime(2026, 11, 24, 11, 1, tzinfo=UTC)  # 20:01: closed; an agent frees up
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    run_routing(app)
    assert dials(no_unexpected_http) == [] and hotline.callbacks.position(the_callback(hotline)) == 1
    clock.now = datetime(2026, 11, 25, 0, 0, 30, tzinfo=UTC)  # Wednesday 9:00:30: first in line
    expect_dial(no_unexpected_http, 1)
    run_routing(app)
    assert len(dials(no_unexpected_http)) == 1 and the_callback(hotline).status == "dialling"


# ----- the dial ------------------------------------------------------------------------------


@pytest.mark.any_database  # the callback block on the ticket, in both stores
def test_the_callback_is_dialled_when_an_agent_is_free_and_bridged(
    app, client, clock, hotline, no_unexpected_http, ticket_for
):
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    clock.advance(120)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    expect_dial(no_unexpected_http, 1)
    run_routing(app)
    [dial] = dials(no_unexpected_http)
    cb = f"{BASE_URL}/voice/callback/{callback.id}/1"
    assert dial == {
        "To": ["+819012345678"],
        "From": [HOTLINE_NUMBER],
        "Url": [f"{cb}/answer"],
        "Method": ["POST"],
        "StatusCallback": [f"{cb}/status"],
        "StatusCallbackMethod": ["POST"],
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
        "Timeout": ["30"],
        "MachineDetection": ["Enable"],
    }
    assert hotline.callbacks.get(callback.id).status == "dialling"
    assert hotline.routing.agents()["a103"][:1] == ("reserved",)

    outbound = {"From": HOTLINE_NUMBER, "To": "+819012345678", "Direction": "outbound-api"}
    signed_post(client, f"/voice/callback/{callback.id}/1/status", call_form(out_sid(1), CallStatus="initiated"))
    root = parse(
        signed_post(
            client, f"/voice/callback/{callback.id}/1/answer", call_form(out_sid(1), AnsweredBy="human", **outbound)
        )
    )
    assert verbs(root) == ["Say", "Dial"]
    intro = f"Hello, this is {CONFIG.name_in('en')}, returning your call to our payment line"
    assert texts(root)[0].startswith(intro)
    assert root.find("Dial").find("Client").text == "emma"
    assert hotline.callbacks.get(callback.id).status == "done"
    # From here the customer's call is an ordinary connection: whisper, accept, wrap-up.
    leg = call_form(sid(0xA1), ParentCallSid=out_sid(1), Direction="outbound-dial")
    root = parse(signed_post(client, "/voice/agent/a103/whisper", leg))
    assert verbs(root) == ["Gather", "Hangup"]
    assert texts(root)[0].startswith("Callback: payment request in English, booked 2 minutes ago, ticket ")
    parse(signed_post(client, "/voice/agent/a103/accept", {**leg, "Digits": "1"}))
    done = call_form(out_sid(1), DialCallStatus="completed", DialBridged="true", DialCallDuration="200")
    root = parse(signed_post(client, "/voice/en/connect/a103/done", done))
    assert texts(root) == [PROMPTS.callback_goodbye["en"]]  # we called them: no "thank you for calling"
    assert hotline.routing.agents()["a103"][0] == "wrap_up"
    signed_post(client, f"/voice/callback/{callback.id}/1/status", call_form(out_sid(1), CallStatus="completed"))

    signed_post(client, "/voice/status", call_form(sid(1), CallStatus="completed"))
    block = ticket_for(sid(1))["callback"]
    assert block["status"] == "done" and block["agent"] == "a103"
    assert block["attempts"] == [
        {
            "n": 1,
            "started_at": block["attempts"][0]["started_at"],
            "at": block["attempts"][0]["at"],
            "result": "connected",
            "agent": "a103",
            "call_sid": out_sid(1),
        }
    ]
    assert None is not block["attempts"][0]["started_at"] <= block["attempts"][0]["at"]
    assert block["role"] == "requested" and block["scheduled_for"] is None  # done: no time to come
    customer = ticket_for(out_sid(1))  # the callback call is a call, with its own ticket
    assert customer["caller"] == "+819012345678" and customer["outcome"] == "transferred"
    # …which says what it was about and which call asked for it.
    assert customer["branch"] == "payment" and customer["language"] == "en"
    assert customer["callback"] == {"id": callback.id, "role": "callback_call", "for_call_sid": sid(1)}


def test_the_whisper_counts_a_callback_from_its_booking_not_from_the_seat_it_keeps(
    app, client, clock, hotline, no_unexpected_http
):
    step(client, "/voice/incoming", 1)
    queue_caller(client, TRANSFER, call_form(sid(1), Digits="0"))
    clock.advance(300)  # five minutes on hold, then the caller takes the offer
    signed_post(client, "/voice/en/hold/payment", call_form(sid(1)))
    assert verbs(parse(signed_post(client, "/voice/en/hold/payment/key", call_form(sid(1), Digits="2")))) == ["Leave"]
    leave = call_form(sid(1), QueueResult="leave", QueueTime="300")
    signed_post(client, "/voice/en/node/agent_payment/queued", leave)
    step(client, "/voice/en/callback/number/answer?attempt=1", 1, Digits="1")
    callback = the_callback(hotline)
    clock.advance(120)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    expect_dial(no_unexpected_http, 1)
    run_routing(app)

    def screen_pop() -> dict:
        return client.get("/agent/api/me", headers=auth("a103")).get_json()["call"]

    # Reserved, and once the customer answers: the agent's screen shows why they called, from the
    # call that asked, and how long they have waited for us since they asked.
    reserved = screen_pop()
    assert (reserved["call_sid"], reserved["reference"], reserved["waited_s"]) == (
        member(callback.id),
        callback.reference,
        120,
    )
    assert "agent_payment" in reserved["path"] and reserved["branch"] == "payment"
    assert reserved["callback"]["id"] == callback.id and reserved["callback"]["number"] == "+819012345678"
    outbound = {"From": HOTLINE_NUMBER, "To": "+819012345678", "Direction": "outbound-api"}
    answer = call_form(out_sid(1), AnsweredBy="human", **outbound)
    signed_post(client, f"/voice/callback/{callback.id}/1/answer", answer)
    talking = screen_pop()
    assert talking["call_sid"] == out_sid(1) and talking["queue"] == "payment"
    assert {k: talking[k] for k in ("reference", "path", "waited_s")} == {
        k: reserved[k] for k in ("reference", "path", "waited_s")
    }
    assert talking["callback"]["attempt"] == 1
    leg = call_form(sid(0xA1), ParentCallSid=out_sid(1), Direction="outbound-dial")
    root = parse(signed_post(client, "/voice/agent/a103/whisper", leg))
    assert texts(root)[0].startswith("Callback: payment request in English, booked 2 minutes ago, ticket ")
    # Talked, and in wrap-up (the seat is gone by then): the same pop, while the agent writes it up.
    parse(signed_post(client, "/voice/agent/a103/accept", {**leg, "Digits": "1"}))
    done = call_form(out_sid(1), DialCallStatus="completed", DialBridged="true", DialCallDuration="200")
    parse(signed_post(client, "/voice/en/connect/a103/done", done))
    assert hotline.routing.agents()["a103"][0] == "wrap_up"
    wrap_up = screen_pop()
    assert (wrap_up["reference"], wrap_up["path"], wrap_up["callback"]["id"]) == (
        reserved["reference"],
        reserved["path"],
        callback.id,
    )


def test_a_callback_customer_sent_back_to_line_who_hangs_up_has_the_whole_story_on_the_ticket(
    app, client, clock, hotline, no_unexpected_http, ticket_for
):
    """The agent misses the whisper; the customer waits at the callback's seat and hangs up."""
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    expect_dial(no_unexpected_http, 1)
    run_routing(app)
    outbound = {"From": HOTLINE_NUMBER, "To": "+819012345678", "Direction": "outbound-api"}
    signed_post(
        client, f"/voice/callback/{callback.id}/1/answer", call_form(out_sid(1), AnsweredBy="human", **outbound)
    )
    missed = call_form(out_sid(1), DialCallStatus="no-answer", **outbound)
    root = parse(signed_post(client, "/voice/en/connect/a103/done", missed))
    assert "Enqueue" in verbs(root)  # back to the callback's place
    clock.advance(40)
    signed_post(client, "/voice/status", call_form(out_sid(1), CallStatus="completed", CallDuration="60", **outbound))
    ticket = ticket_for(out_sid(1))
    assert ticket["outcome"] == "abandoned" and ticket["branch"] == "payment"
    assert ticket["queue"]["queue"] == "payment"
    assert [(m["agent"], m["result"]) for m in ticket["queue"]["agents_missed"]] == [("a103", "no-answer")]
    assert ticket["callback"]["role"] == "callback_call"
    # The asking call's ticket: the customer was reached, but no agent talked to them.
    signed_post(client, "/voice/status", call_form(sid(1), CallStatus="completed"))
    asked = ticket_for(sid(1))["callback"]
    assert asked["status"] == "done" and asked["attempts"][0]["result"] == "connected"
    assert asked["agent"] is None


def test_without_a_caller_id_to_dial_from_callbacks_wait_undialled_and_live_callers_are_served(make_app, sleeps):
    """TWILIO_CALLER_ID unset (a worker started without it): no agent is reserved for a dial
    that must fail — it would be again and again, the callback stuck 'dialling', uncancellable."""
    app = make_app(TWILIO_CALLER_ID="", SLEEP=sleeps)
    client, hotline = app.test_client(), app.extensions["hotline"]
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", 0)
    run_routing(app)
    assert hotline.callbacks.get(callback.id).status == "pending"
    assert hotline.routing.agents()["a103"][0] == "available"
    assert client.get("/healthz").get_json()["dialling"] == "unavailable: TWILIO_CALLER_ID unset"
    assert signed_post(client, f"/api/callbacks/{callback.id}/cancel", {}, headers=OPS).status_code == 200
    queue_caller(client, TRANSFER, call_form(sid(2), Digits="0"))
    with app.app_context():
        dispatch_once()
    assert hotline.routing.agents()["a103"][0] == "reserved"


def test_callbacks_and_live_callers_are_served_in_arrival_order(app, client, clock, hotline, no_unexpected_http):
    clock.advance(5)
    queue_caller(client, TRANSFER, call_form(sid(1), Digits="0", From="+819011110001"))
    clock.advance(5)
    book_with_caller_id(client, 2, frm="+819011110002")  # books while the line is unstaffed
    clock.advance(5)
    queue_caller(client, "/voice/en/node/agent_payment/join?queue=payment", call_form(sid(3), From="+819011110003"))
    callback = the_callback(hotline, "+819011110002")
    line = [m.decode() for m in hotline.redis.zrange(waiting_key("payment", "en"), 0, -1)]
    assert line == [sid(1), member(callback.id), sid(3)]

    no_unexpected_http.add(responses.POST, f"{CALLS_URL[:-5]}/{sid(1)}.json", json={"sid": sid(1)})
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    run_routing(app)  # the live caller first
    assert hotline.routing.agents()["a103"][2] == sid(1)
    assert dials(no_unexpected_http) == []
    hotline.routing.set_agent_status("a101", "available", now_ms(clock))
    expect_dial(no_unexpected_http, 2)
    run_routing(app)  # then the callback, before caller 3
    assert hotline.routing.agents()["a101"][2] == member(callback.id)
    assert len(dials(no_unexpected_http)) == 1
    assert hotline.routing.position(sid(3), "payment", "en") == 1


@pytest.mark.any_database  # the callback block on the ticket, in both stores
def fail_every_attempt(app, client, clock, hotline, mock, callback, check=None) -> None:
    """No answer on each of the three attempts; `check(n)` after each."""
    for n in (1, 2, 3):
        hotline.routing.set_agent_status("a103", "available", now_ms(clock))
        expect_dial(mock, n)
        run_routing(app)
        assert len(dials(mock)) == n
        signed_post(client, f"/voice/callback/{callback.id}/{n}/status", call_form(out_sid(n), CallStatus="no-answer"))
        if check:
            check(n)
        if n < 3:
            hotline.routing.set_agent_status("a103", "away", now_ms(clock))
            clock.advance(10 * 60)
            assert run_due_scheduled(app, clock) == 1


def test_no_answer_is_retried_after_the_spacing_then_failed_with_a_text(
    app, client, clock, hotline, no_unexpected_http, ticket_for
):
    book_with_caller_id(client, 1)
    signed_post(client, "/voice/status", call_form(sid(1), CallStatus="completed"))
    callback = the_callback(hotline)
    for n in (1, 2, 3):
        hotline.routing.set_agent_status("a103", "available", now_ms(clock))
        expect_dial(no_unexpected_http, n)
        run_routing(app)
        assert len(dials(no_unexpected_http)) == n
        status = call_form(out_sid(n), CallStatus="no-answer")
        signed_post(client, f"/voice/callback/{callback.id}/{n}/status", status)
        assert hotline.routing.agents()["a103"][0] == "available"  # the agent was only reserved
        if n < 3:
            assert hotline.callbacks.get(callback.id).status == "scheduled"
            assert scheduled_times(app) == [clock.now + timedelta(minutes=10)]
            hotline.routing.set_agent_status("a103", "away", now_ms(clock))
            clock.advance(9 * 60)
            assert run_due_scheduled(app, clock) == 0  # not yet
            clock.advance(60)
            assert run_due_scheduled(app, clock) == 1
            # Back in line with its original arrival: first again.
            assert hotline.routing.position(member(callback.id), "payment", "en") == 1
    assert hotline.callbacks.get(callback.id).status == "failed"
    no_unexpected_http.add(responses.POST, MESSAGES_URL, status=201, json={"sid": "SM" + "1" * 32})
    with app.app_context():
        SimpleWorker([hotline.callbacks_queue], connection=hotline.redis).work(burst=True)
    [sms] = [parse_qs(c.request.body) for c in no_unexpected_http.calls if c.request.url == MESSAGES_URL]
    reference = hotline.calls.reference(sid(1))
    assert sms["To"] == ["+819012345678"] and sms["From"] == [HOTLINE_NUMBER]
    assert sms["Body"] == [PROMPTS.callback_failed_sms["en"].format(hotline=CONFIG.name["en"], reference=reference)]
    block = ticket_for(sid(1))["callback"]
    assert block["status"] == "failed" and block["sms_sent"] is True
    assert [a["result"] for a in block["attempts"]] == ["no-answer"] * 3
    assert hotline.callbacks.open_for("+819012345678") is None
    [listed] = client.get("/api/callbacks?status=failed", headers=OPS).get_json()["callbacks"]
    assert listed["sms_sent"] is True and listed["sms_sent_at"] is not None
    assert [a["result"] for a in listed["attempts"]] == ["no-answer"] * 3
    # A second text job for the same callback (queued by hand, say) sends nothing more.
    with app.app_context():
        hotline.callbacks_queue.enqueue(send_failure_sms, callback.id)
        SimpleWorker([hotline.callbacks_queue], connection=hotline.redis).work(burst=True)
    assert len([c for c in no_unexpected_http.calls if c.request.url == MESSAGES_URL]) == 1


@pytest.mark.parametrize("reached_twilio", [True, False])
def test_a_failure_text_whose_reply_was_lost_is_looked_up_before_it_is_sent_again(
    app, client, clock, hotline, no_unexpected_http, reached_twilio
):
    """The create-message times out; RQ runs the job again. If Twilio took the text, the retry
    finds it in the message list and sends nothing; if not, it sends it: one text either way."""
    from email.utils import format_datetime

    import requests

    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    fail_every_attempt(app, client, clock, hotline, no_unexpected_http, callback)
    body = PROMPTS.callback_failed_sms["en"].format(
        hotline=CONFIG.name["en"], reference=hotline.calls.reference(sid(1))
    )
    posts = []

    def create(request):
        posts.append(parse_qs(request.body))
        if len(posts) == 1:
            return requests.ReadTimeout("Twilio took the text; its reply never came")
        return 201, {}, json.dumps({"sid": "SM" + "2" * 32})

    def listing(_request):
        sent = [
            {
                "sid": "SM" + "1" * 32,
                "to": "+819012345678",
                "from": HOTLINE_NUMBER,
                "body": body,
                "date_created": format_datetime(clock.now.astimezone(UTC), usegmt=True),
            }
        ]
        return (
            200,
            {},
            json.dumps({"messages": sent if reached_twilio else [], "next_page_uri": None, "page": 0, "page_size": 20}),
        )

    no_unexpected_http.add_callback(responses.POST, MESSAGES_URL, callback=create)
    no_unexpected_http.add_callback(responses.GET, MESSAGES_URL, callback=listing)
    with app.app_context():
        SimpleWorker([hotline.callbacks_queue], connection=hotline.redis).work(burst=True)
        run_rq_retry(hotline)
    assert len(posts) == (1 if reached_twilio else 2)
    assert hotline.callbacks.get(callback.id).sms_sent_ms is not None


def test_a_landline_whose_callback_failed_is_not_sent_a_text(app, client, clock, hotline, no_unexpected_http):
    landline = "+81312345678"  # 03-1234-5678, Tokyo
    book_with_caller_id(client, 1, frm=landline)
    callback = the_callback(hotline, landline)
    fail_every_attempt(app, client, clock, hotline, no_unexpected_http, callback)
    assert hotline.callbacks.get(callback.id).status == "failed"
    with app.app_context():  # the text job runs, and asks Twilio nothing (no Messages response is set up)
        SimpleWorker([hotline.callbacks_queue], connection=hotline.redis).work(burst=True)
        assert send_failure_sms(callback.id) == "landline"
    assert not [c for c in no_unexpected_http.calls if c.request.url == MESSAGES_URL]
    assert hotline.callbacks.get(callback.id).sms_sent_ms is None


def test_a_retry_survives_the_loss_of_its_seat_job_between_the_result_and_the_schedule(
    app, client, clock, hotline, no_unexpected_http
):
    """The work stops (here: Redis refuses the ticket note, WRONGTYPE) after the attempt's result
    is written and before the retry's seat job is queued: the retry time went with the result,
    so the dispatcher's sweep seats it when it is due."""
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    hotline.routing.set_agent_status("a103", "away", now_ms(clock))
    hotline.redis.delete(events_key(sid(1)))
    hotline.redis.set(events_key(sid(1)), "not a list")
    signed_post(client, f"/voice/callback/{callback.id}/1/status", call_form(out_sid(1), CallStatus="no-answer"))
    hotline.redis.delete(events_key(sid(1)))
    current = hotline.callbacks.get(callback.id)
    retry_at = clock.now + timedelta(minutes=10)
    assert current.status == "scheduled" and current.scheduled_ms == int(retry_at.timestamp() * 1000)
    assert scheduled_times(app) == []  # the seat job is lost

    clock.now = retry_at + timedelta(minutes=3)  # past the sweep's grace
    run_routing(app)
    assert hotline.callbacks.get(callback.id).status == "pending"
    assert hotline.routing.position(member(callback.id), "payment", "en") == 1


def test_an_answering_machine_is_a_failed_attempt(app, client, clock, hotline, no_unexpected_http):
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    form = call_form(out_sid(1), AnsweredBy="machine_start", From=HOTLINE_NUMBER)
    root = parse(signed_post(client, f"/voice/callback/{callback.id}/1/answer", form))
    assert verbs(root) == ["Hangup"]
    current = hotline.callbacks.get(callback.id)
    assert current.status == "scheduled" and current.attempts[0]["result"] == "machine"
    assert hotline.routing.agents()["a103"][0] == "available"
    # Its completed status afterwards changes nothing, and makes no ticket of its own.
    signed_post(client, f"/voice/callback/{callback.id}/1/status", call_form(out_sid(1), CallStatus="completed"))
    assert len(hotline.callbacks.get(callback.id).attempts) == 1
    assert hotline.calls.reference(out_sid(1)) is None


def test_a_job_that_runs_twice_dials_once(app, client, clock, hotline, no_unexpected_http):
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    with app.app_context():
        assert place_callback(callback.id, 1) == "already placed"
    assert len(dials(no_unexpected_http)) == 1


def test_a_dial_whose_result_is_unknown_is_looked_up_before_any_redial(app, client, clock, hotline, no_unexpected_http):
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    # The request reached Twilio (it placed the call) but the answer never came back to us.
    no_unexpected_http.add(responses.POST, CALLS_URL, body=requests.ConnectionError("connection reset"))
    created = format_datetime(clock.now.astimezone(UTC), usegmt=True)
    listing = {
        "calls": [{"sid": out_sid(1), "to": "+819012345678", "from": HOTLINE_NUMBER, "date_created": created}],
        "next_page_uri": None,
        "page": 0,
        "page_size": 20,
    }
    no_unexpected_http.add(responses.GET, CALLS_URL, json=listing)
    run_routing(app)
    with app.app_context():
        run_rq_retry(hotline)  # RQ retries the job; run it as the scheduler would
        assert not FailedJobRegistry(queue=hotline.callbacks_queue).get_job_ids()
    assert len(dials(no_unexpected_http)) == 1
    lookup = next(c.request for c in no_unexpected_http.calls if c.request.method == "GET")
    assert parse_qs(lookup.url.split("?", 1)[1])["To"] == ["+819012345678"]
    assert hotline.callbacks.get(callback.id).attempts[0]["call_sid"] == out_sid(1)


def test_an_invalid_number_reported_by_twilio_fails_at_once(
    app, client, clock, hotline, no_unexpected_http, ticket_for
):
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    error = {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}
    no_unexpected_http.add(responses.POST, CALLS_URL, status=400, json=error)
    no_unexpected_http.add(responses.POST, MESSAGES_URL, status=400, json=error)  # the text is refused too
    run_routing(app)
    with app.app_context():
        SimpleWorker([hotline.callbacks_queue], connection=hotline.redis).work(burst=True)
    current = hotline.callbacks.get(callback.id)
    assert (current.status, current.reason) == ("failed", "rejected:21211")
    assert hotline.routing.agents()["a103"][0] == "available"
    assert scheduled_times(app) == []
    signed_post(client, "/voice/status", call_form(sid(1), CallStatus="completed"))
    block = ticket_for(sid(1))["callback"]
    assert (block["sms_sent"], block["sms_refused"]) == (False, 21211)


def test_a_rate_limited_dial_is_retried_and_the_seat_kept(app, client, clock, hotline, no_unexpected_http):
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    no_unexpected_http.add(responses.POST, CALLS_URL, status=429, json={"code": 20429, "message": "Too Many"})
    expect_dial(no_unexpected_http, 1)
    run_routing(app)
    assert hotline.callbacks.get(callback.id).attempts[0].get("call_sid") is None
    with app.app_context():
        run_rq_retry(hotline)
    assert len(dials(no_unexpected_http)) == 2
    assert hotline.callbacks.get(callback.id).attempts[0]["call_sid"] == out_sid(1)


def test_dials_are_paced_across_workers_on_redis_time(app, sleeps):
    with app.app_context():
        waits = [take_dial_slot(2.0)[0] for _ in range(4)]
        assert waits[0] < 0.05  # the first goes at once
        # Each later dial waits for its own half-second slot, whoever asks.
        assert [round(b - a, 1) for a, b in zip(waits, waits[1:], strict=False)] == [0.5, 0.5, 0.5]
        assert take_dial_slot(0) == (0, None)


# ----- after hours ---------------------------------------------------------------------------


def test_an_after_hours_caller_is_called_back_after_opening(app, client, clock, hotline, no_unexpected_http):
    clock.now = CLOSED_TIME  # Saturday 22:00 in Tokyo; open Monday 09:00
    step(client, "/voice/incoming", 1)
    root = step(client, TRANSFER, 1, Digits="0")
    assert PROMPTS.callback_offer_closed["en"].format(key="2") in texts(root)
    step(client, OFFER_CHOICE, 1, Digits="2")
    root = step(client, "/voice/en/callback/number/answer?attempt=1", 1, Digits="1")
    reference = " ".join(str(hotline.calls.reference(sid(1))))
    assert texts(root)[0] == PROMPTS.callback_booked_closed["en"].format(
        last4="5 6 7 8", opening="on Monday, November 30, at 9 AM", reference=reference
    )
    callback = the_callback(hotline)
    assert callback.status == "scheduled"
    # Phoning again meanwhile and keeping it: told when, not "when it is your turn".
    step(client, "/voice/incoming", 9)
    root = step(client, f"/voice/en/callback/pending/{callback.id}", 9, Digits="1")
    kept = PROMPTS.callback_kept_scheduled["en"].format(opening="on Monday, November 30, at 9 AM")
    assert texts(root) == [kept, PROMPTS.goodbye["en"]]
    opening = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)  # Monday 09:00 JST
    assert scheduled_times(app) == [opening]
    assert hotline.redis.zcard(waiting_key("payment", "en")) == 0

    # An agent who stays available on Sunday does not make us dial the customer at night.
    clock.now = opening - timedelta(hours=10)
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    assert run_due_scheduled(app, clock) == 0
    run_routing(app)
    assert dials(no_unexpected_http) == []

    clock.now = opening + timedelta(seconds=1)
    assert run_due_scheduled(app, clock) == 1
    assert hotline.callbacks.get(callback.id).status in ("pending", "dialling")
    expect_dial(no_unexpected_http, 1)
    run_routing(app)
    assert len(dials(no_unexpected_http)) == 1

    # The agent hears when it was booked, not "booked 2,100 minutes ago".
    outbound = {"From": HOTLINE_NUMBER, "To": "+819012345678", "Direction": "outbound-api"}
    signed_post(
        client, f"/voice/callback/{callback.id}/1/answer", call_form(out_sid(1), AnsweredBy="human", **outbound)
    )
    leg = call_form(sid(0xA1), ParentCallSid=out_sid(1), Direction="outbound-dial")
    root = parse(signed_post(client, "/voice/agent/a103/whisper", leg))
    assert verbs(root) == ["Gather", "Hangup"]
    assert texts(root)[0] == PROMPTS.callback_whisper_earlier["en"].format(
        branch="payment",
        language="English",
        booked_at="on Saturday, November 28, at 10 PM",
        reference=reference,
        key="1",
    )


def test_callbacks_in_line_wait_for_opening_while_live_callers_behind_are_served(
    app, client, clock, hotline, no_unexpected_http
):
    book_with_caller_id(client, 1)  # pending in line at 10:00
    callback = the_callback(hotline)
    queue_caller(client, "/voice/en/node/agent_payment/join?queue=payment", call_form(sid(2)))
    clock.now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # 21:00 in Tokyo: closed
    hotline.routing.set_agent_status("a103", "available", now_ms(clock))
    no_unexpected_http.add(responses.POST, f"{CALLS_URL[:-5]}/{sid(2)}.json", json={"sid": sid(2)})
    run_routing(app)
    assert hotline.routing.agents()["a103"][2] == sid(2)  # the live caller, not the callback
    assert hotline.callbacks.get(callback.id).status == "pending"


# ----- ops ----------------------------------------------------------------------------------


def test_ops_list_filter_and_cancel_callbacks(app, client, clock, hotline):
    book_with_caller_id(client, 1)
    book_with_caller_id(client, 2, frm="+819022223333")
    assert client.get("/api/callbacks").status_code == 401
    listed = client.get("/api/callbacks", headers=OPS).get_json()
    assert listed["count"] == 2
    first = listed["callbacks"][-1]
    assert (first["status"], first["number"], first["queue"], first["position"]) == (
        "pending",
        "+819012345678",
        "payment",
        1,
    )
    assert client.get("/api/callbacks?status=bogus", headers=OPS).status_code == 400
    assert client.get("/api/callbacks?queue=payment&status=pending", headers=OPS).get_json()["count"] == 2
    response = client.post(f"/api/callbacks/{first['id']}/cancel", headers=OPS)
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"
    assert client.post(f"/api/callbacks/{first['id']}/cancel", headers=OPS).status_code == 409
    assert client.post("/api/callbacks/999/cancel", headers=OPS).status_code == 404
    assert client.get("/api/callbacks?status=cancelled", headers=OPS).get_json()["count"] == 1
    one = client.get(f"/api/callbacks/{first['id']}", headers=OPS)
    assert one.status_code == 200 and (one.get_json()["id"], one.get_json()["status"]) == (first["id"], "cancelled")
    assert client.get("/api/callbacks/999", headers=OPS).status_code == 404
    # The other callback moved up.
    assert client.get("/api/callbacks?status=pending", headers=OPS).get_json()["callbacks"][0]["position"] == 1


def test_a_customer_who_answers_after_we_gave_up_on_the_attempt_waits_in_their_place(
    app, client, clock, hotline, no_unexpected_http
):
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    # The reservation is given up (its webhooks were late, say): what the router's sweep does.
    clock.advance(600)
    with app.app_context():
        assert hotline.callback_desk().attempt_over(callback.id, 1, "released") == "requeued"
    assert hotline.callbacks.get(callback.id).status == "pending"
    assert hotline.routing.agents()["a103"][0] == "available"
    hotline.routing.set_agent_status("a103", "away", now_ms(clock))
    form = call_form(out_sid(1), AnsweredBy="human", From=HOTLINE_NUMBER)
    root = parse(signed_post(client, f"/voice/callback/{callback.id}/1/answer", form))
    assert verbs(root) == ["Say", "Enqueue"] and root.find("Enqueue").text == "payment"
    assert hotline.callbacks.get(callback.id).status == "done"
    # The customer holds the callback's place: ahead of nobody who came before them.
    assert hotline.redis.zscore(waiting_key("payment", "en"), out_sid(1)) == callback.arrived_ms


def test_a_callback_call_whose_webhooks_never_come_counts_as_an_attempt_and_is_retried_later(
    app, client, clock, hotline, no_unexpected_http
):
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    clock.advance(120)  # ringing the customer and machine detection may take this long: kept
    run_routing(app)
    assert hotline.callbacks.get(callback.id).status == "dialling"
    clock.advance(300)
    cancel_url = f"{CALLS_URL[:-5]}/{out_sid(1)}.json"
    no_unexpected_http.add(responses.POST, cancel_url, json={"sid": out_sid(1), "status": "canceled"})
    run_routing(app)  # released: the customer's phone rang, so it counts (no endless ringing)
    current = hotline.callbacks.get(callback.id)
    assert [(a["n"], a.get("result")) for a in current.attempts] == [(1, "no_result")]
    assert current.status == "scheduled" and scheduled_times(app) == [clock.now + timedelta(minutes=10)]
    assert hotline.routing.agents()["a103"][0] == "available"
    assert len(dials(no_unexpected_http)) == 1
    # The given-up attempt is stopped at Twilio, in case it still rings.
    [cancel] = [parse_qs(c.request.body) for c in no_unexpected_http.calls if c.request.url == cancel_url]
    assert cancel == {"Status": ["canceled"]}
    with app.app_context():
        assert not FailedJobRegistry(queue=hotline.callbacks_queue).get_job_ids()


@pytest.mark.any_database  # the callback block on the ticket, in both stores
def test_a_retry_due_after_closing_waits_for_opening_and_a_lost_seat_job_is_swept_up(
    app, client, clock, hotline, no_unexpected_http, ticket_for
):
    clock.now = datetime(2026, 11, 24, 10, 45, tzinfo=UTC)  # 19:45 in Tokyo; closes at 20:00
    # Nobody on duty 15 minutes before closing: the offer names the opening too.
    opening = "tomorrow, Wednesday, at 9 AM"
    offer = PROMPTS.callback_offer_past_closing["en"].format(key="2", opening=opening)
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http, offer=offer)
    signed_post(client, f"/voice/callback/{callback.id}/1/status", call_form(out_sid(1), CallStatus="busy"))
    hotline.routing.set_agent_status("a103", "away", now_ms(clock))
    assert scheduled_times(app) == [clock.now + timedelta(minutes=10)]  # 19:55
    clock.now = datetime(2026, 11, 24, 11, 0, 5, tzinfo=UTC)  # the scheduler ran late: 20:00:05
    assert run_due_scheduled(app, clock) == 1
    opening = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)  # Wednesday 09:00
    assert scheduled_times(app) == [opening]  # the job that ran did not delete its successor
    assert hotline.callbacks.get(callback.id).status == "scheduled"

    # Even if that job is lost (deleted here), the dispatcher seats the callback once overdue.
    with app.app_context():
        registry = ScheduledJobRegistry(queue=hotline.callbacks_queue)
        for job_id in registry.get_job_ids():
            registry.remove(job_id)
            hotline.callbacks_queue.fetch_job(job_id).delete()
    clock.now = opening + timedelta(minutes=1)
    run_routing(app)
    assert hotline.callbacks.get(callback.id).status == "scheduled"  # within the grace
    clock.now = opening + timedelta(minutes=3)
    run_routing(app)
    assert hotline.callbacks.get(callback.id).status == "pending"
    assert hotline.routing.position(member(callback.id), "payment", "en") == 1
    signed_post(client, "/voice/status", call_form(sid(1), CallStatus="completed"))
    block = ticket_for(sid(1))["callback"]
    assert block["status"] == "pending" and [a["result"] for a in block["attempts"]] == ["busy"]


def test_a_seat_job_no_scheduler_moves_is_swept_up_after_the_grace(app, client, clock, hotline, no_unexpected_http):
    """The job is in RQ's scheduled registry, but no scheduler runs (a killed worker's lock
    outlives it, and a new worker takes it over only later): the dispatcher seats it."""
    clock.now = CLOSED_TIME  # Saturday 22:00: booked for Monday 09:00
    frm = "+819022223333"
    step(client, TRANSFER, 2, Digits="0", From=frm)
    step(client, OFFER_CHOICE, 2, Digits="2", From=frm)
    step(client, "/voice/en/callback/number/answer?attempt=1", 2, Digits="1", From=frm)
    opening = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)
    assert scheduled_times(app) == [opening]
    clock.now = opening + timedelta(minutes=1)
    run_routing(app)
    assert the_callback(hotline, frm).status == "scheduled"  # within the grace: the job may yet run
    clock.now = opening + timedelta(minutes=3)
    run_routing(app)
    callback = the_callback(hotline, frm)
    assert callback.status == "pending" and hotline.callbacks.position(callback) == 1
    assert scheduled_times(app) == [opening]  # the late job, should it run, finds it seated
    with app.app_context():
        assert seat_callback(callback.id) == "not scheduled"


def test_the_agent_hears_the_reference_the_customer_was_given(app, client, clock, hotline, no_unexpected_http):
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    form = call_form(out_sid(1), AnsweredBy="human", From=HOTLINE_NUMBER)
    parse(signed_post(client, f"/voice/callback/{callback.id}/1/answer", form))
    # The whisper and the sweep: the reservation's clock restarted when the customer answered.
    clock.advance(85)
    run_routing(app)
    assert hotline.routing.agents()["a103"][:1] == ("reserved",)
    leg = call_form(sid(0xA1), ParentCallSid=out_sid(1), Direction="outbound-dial")
    root = parse(signed_post(client, "/voice/agent/a103/whisper", leg))
    assert f"ticket {' '.join(str(callback.reference))}." in texts(root)[0]


def test_asking_again_while_a_retry_waits_puts_it_back_in_line_now(
    app, client, clock, hotline, no_unexpected_http, ticket_for
):
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    signed_post(client, f"/voice/callback/{callback.id}/1/status", call_form(out_sid(1), CallStatus="no-answer"))
    hotline.routing.set_agent_status("a103", "away", now_ms(clock))
    assert hotline.callbacks.get(callback.id).status == "scheduled"
    clock.advance(60)
    root = book_with_caller_id(client, 2)
    assert "you are number 1" in texts(root)[0]
    assert hotline.callbacks.get(callback.id).status == "pending"
    # Both asking calls' tickets tell the same story: the try made before the second asked too.
    for n in (1, 2):
        signed_post(client, "/voice/status", call_form(sid(n), CallStatus="completed"))
    blocks = [ticket_for(sid(n))["callback"] for n in (1, 2)]
    assert [[(a["n"], a["result"], a["call_sid"]) for a in b["attempts"]] for b in blocks] == [
        [(1, "no-answer", out_sid(1))]
    ] * 2
    assert [b["status"] for b in blocks] == ["pending", "pending"]


def test_cancelling_a_callback_that_is_being_dialled_says_so(app, client, clock, hotline, no_unexpected_http):
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    step(client, "/voice/incoming", 3)  # dialling: not offered (it is not pending any more)
    root = step(client, f"/voice/en/callback/pending/{callback.id}", 3, Digits="2")
    assert texts(root)[0] == PROMPTS.callback_kept["en"]
    assert hotline.callbacks.get(callback.id).status == "dialling"


def test_a_dial_whose_slot_is_far_off_comes_back_at_its_slot_instead_of_sleeping(
    make_app, tmp_path, clock, sleeps, no_unexpected_http
):
    app = app_with_callbacks(make_app, tmp_path, sleeps, calls_per_second=0.1)  # one dial every 10 s
    hotline = app.extensions["hotline"]
    with app.app_context():
        take_dial_slot(0.1)  # another worker's dial took the current slot
    callback = book_and_dial(app, app.test_client(), clock, hotline, no_unexpected_http)
    assert sleeps == []  # no worker sleeps 10 s
    with app.app_context():
        registry = ScheduledJobRegistry(queue=hotline.callbacks_queue)
        [job_id] = registry.get_job_ids()
        job = hotline.callbacks_queue.fetch_job(job_id)
        assert job.args[:2] == (callback.id, 1)
        slot = job.args[2] / 1_000_000
        scheduled = registry.get_scheduled_time(job_id).timestamp()
        # A little before its slot (RQ keeps whole seconds), and later than now: measured against
        # the slot, not against how long the setup took on a busy machine.
        assert slot - PACED_EARLY_S - 1 <= scheduled <= slot - PACED_EARLY_S
        assert scheduled > datetime.now(UTC).timestamp()
        # Run far too early (here: at once), it neither dials nor sleeps: it is scheduled again.
        registry.remove(job_id)
        hotline.callbacks_queue.enqueue_job(job)
        SimpleWorker([hotline.callbacks_queue], connection=hotline.redis).work(burst=True)
        [again] = registry.get_job_ids()
        assert hotline.callbacks_queue.fetch_job(again).args[2] / 1_000_000 == slot
    assert dials(no_unexpected_http) == [] and sleeps == []
    no_unexpected_http.remove(responses.POST, CALLS_URL)


def test_a_paced_dial_comes_back_just_before_its_slot_and_sleeps_the_rest(
    make_app, tmp_path, clock, sleeps, no_unexpected_http
):
    app = app_with_callbacks(make_app, tmp_path, sleeps, calls_per_second=0.3)  # one dial every 3.3 s
    hotline = app.extensions["hotline"]
    with app.app_context():
        take_dial_slot(0.3)  # another worker's dial took the current slot
    book_and_dial(app, app.test_client(), clock, hotline, no_unexpected_http)
    assert dials(no_unexpected_http) == []  # 3.3 s away: more than a worker sleeps on
    with app.app_context():
        registry = ScheduledJobRegistry(queue=hotline.callbacks_queue)
        [job_id] = registry.get_job_ids()
        job = hotline.callbacks_queue.fetch_job(job_id)
        slot = job.args[2] / 1_000_000
        assert registry.get_scheduled_time(job_id).timestamp() <= slot - 1.5  # ahead of the scheduler's lag
        registry.remove(job_id)
        hotline.callbacks_queue.enqueue_job(job)  # as RQ's scheduler does, a moment early
        # The slot is on Redis's (real) clock: bracket the run rather than trust how long the
        # setup took on a busy machine.
        left_before = seconds_until(job.args[2])
        SimpleWorker([hotline.callbacks_queue], connection=hotline.redis).work(burst=True)
        left_after = seconds_until(job.args[2])
    assert len(dials(no_unexpected_http)) == 1
    [rest] = sleeps  # it slept until its slot, then dialled
    assert 0 < rest <= 1 / 0.3
    assert left_after <= rest <= left_before


def test_a_dial_retried_long_after_its_slot_takes_a_fresh_one(make_app, tmp_path, clock, sleeps, no_unexpected_http):
    app = app_with_callbacks(make_app, tmp_path, sleeps, calls_per_second=0.1)
    hotline = app.extensions["hotline"]
    with app.app_context():
        _, slot_us = take_dial_slot(0.1)  # this dial's slot, a minute ago by the time RQ retries it
        take_dial_slot(0.1)  # others have dialled since: the next free slot is seconds away
    callback = book_and_dial(app, app.test_client(), clock, hotline, no_unexpected_http)  # paced too
    with app.app_context():
        assert place_callback(callback.id, 1, slot_us - 60_000_000) == "paced"
    assert dials(no_unexpected_http) == []  # not dialled at once on a spent slot
    no_unexpected_http.remove(responses.POST, CALLS_URL)  # the dial comes at its new slot


def test_the_queues_api_counts_open_callbacks(app, client, clock, hotline):
    book_with_caller_id(client, 1)
    clock.now = CLOSED_TIME
    frm = "+819022223333"
    step(client, TRANSFER, 2, Digits="0", From=frm)
    step(client, OFFER_CHOICE, 2, Digits="2", From=frm)
    step(client, "/voice/en/callback/number/answer?attempt=1", 2, Digits="1", From=frm)
    queues = {q["queue"]: q for q in client.get("/api/queues", headers=OPS).get_json()["queues"]}
    assert queues["payment"]["callbacks"] == {"pending": 1, "scheduled": 1, "dialling": 0}
    assert queues["payment"]["waiting"] == 1  # the pending one holds a seat; the scheduled one not yet


def test_listings_and_counts_cover_every_callback_however_many(app, client, clock, hotline):
    """Past a page of the index (1,000): the oldest callbacks are still found and counted."""
    start_ms = now_ms(clock) - 3_600_000
    for n in range(3):
        stored_callback(hotline, n, start_ms + n, queue="refund")  # the oldest: beyond the first page
    for n in range(3, 1205):
        stored_callback(hotline, n, start_ms + n)
    refund = client.get("/api/callbacks?queue=refund&status=pending", headers=OPS).get_json()
    assert refund["count"] == 3
    assert len(client.get("/api/callbacks?limit=1000", headers=OPS).get_json()["callbacks"]) == 1000
    queues = {q["queue"]: q for q in client.get("/api/queues", headers=OPS).get_json()["queues"]}
    assert queues["payment"]["callbacks"]["pending"] == 1202 and queues["refund"]["callbacks"]["pending"] == 3


def test_the_ops_listing_keeps_what_is_open_or_recently_closed_however_long_ago_it_was_asked(
    app, client, clock, hotline
):
    """The index is trimmed of old entries whose record expired, not of every old entry: a
    callback asked for three weeks ago and still open, or closed yesterday, stays listed."""
    from ivr.queues.callbacks import record_key

    weeks_ago = now_ms(clock) - 21 * 24 * 3_600_000

    def book(n: int) -> str:
        return stored_callback(
            hotline, 1000 + n, weeks_ago + n, status="scheduled", scheduled_ms=now_ms(clock) + 3_600_000
        ).id

    still_open, closed_yesterday, long_gone = book(1), book(2), book(3)
    with app.app_context():
        for callback_id in (closed_yesterday, long_gone):
            assert hotline.callback_desk().cancel(callback_id, "ops") == "cancelled"
    hotline.redis.delete(record_key(long_gone))  # its 14 days after closing are over
    listed = {c["id"]: c["status"] for c in client.get("/api/callbacks", headers=OPS).get_json()["callbacks"]}
    assert listed == {still_open: "scheduled", closed_yesterday: "cancelled"}
    queue = client.get("/api/callbacks?queue=payment", headers=OPS).get_json()["callbacks"]
    assert {c["id"] for c in queue} == {still_open, closed_yesterday}


def test_a_walked_call_takes_the_offer_while_holding_and_books_with_its_caller_id(walker, hotline, ticket_for):
    """The call walker plays Twilio: the pre-queue offer passes in silence, the hold turn's
    Gather hears the key, the Leave ends the Enqueue, and the number step books the callback."""
    result = walker(caller="+819012345678").dial(["3", "2", "0", None, "queue:press:2", "1"])
    assert not result.problems, result.problems
    assert result.ended == "hangup"
    said = [u.text for u in result.said]
    assert PROMPTS.callback_offer["en"].format(key="2") in said
    assert PROMPTS.callback_use_caller_id["en"].format(last4="5 6 7 8") in said
    assert said[-2].startswith("Thank you. We will call you back at the number ending in 5 6 7 8")
    callback = the_callback(hotline)
    ticket = ticket_for(result.call_sid)
    assert ticket["outcome"] == "callback" and ticket["callback"]["id"] == callback.id
    assert ticket["queue"]["result"] == "callback"


def test_a_caller_back_in_line_after_a_failed_number_who_hangs_up_there_abandoned(walker, hotline, ticket_for):
    """They leave the line for the callback offer, give no number, are put back in line at their
    place, and hang up while waiting: the ticket says abandoned, as its queue block does."""
    keys = ["3", "2", "0", None, "queue:press:2", "2", None, None, None, "queue:hangup"]
    result = walker(caller="+819012345678").dial(keys)
    assert not result.problems, result.problems
    assert PROMPTS.callback_no_number["en"] in [u.text for u in result.said]
    assert hotline.callbacks.open_for("+819012345678") is None
    ticket = ticket_for(result.call_sid)
    assert (ticket["outcome"], ticket["queue"]["result"]) == ("abandoned", "abandoned")


def test_a_walked_caller_types_another_number_ending_with_hash_as_the_prompt_asks(walker, hotline):
    """Twilio leaves the finishing key out of Digits; so does the walker."""
    result = walker(caller="+819012345678").dial(["3", "2", "0", "2", "2", "08033334444#", "1"])
    assert not result.problems, result.problems
    said = [u.text for u in result.said]
    assert PROMPTS.callback_readback["en"].format(digits="0 8 0, 3 3 3 3, 4 4 4 4") in said
    assert the_callback(hotline, "+818033334444").status == "pending"


def test_a_late_seat_job_is_not_taken_for_lost(app, client, clock, hotline, no_unexpected_http):
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    signed_post(client, f"/voice/callback/{callback.id}/1/status", call_form(out_sid(1), CallStatus="busy"))
    hotline.routing.set_agent_status("a103", "away", now_ms(clock))
    clock.advance(30 * 60)  # twenty minutes past due ...
    assert run_due_scheduled(app, clock, run=False) == 1  # ... its job queued, in a backlog
    with app.app_context():
        dispatch_once()  # the sweep leaves it to its job
    assert hotline.callbacks.get(callback.id).status == "scheduled"
    run_routing(app)  # the worker gets to the job
    assert hotline.callbacks.get(callback.id).status == "pending"
    assert [a["n"] for a in hotline.callbacks.get(callback.id).attempts] == [1]


def test_keeping_a_callback_that_ended_while_the_caller_listened_says_it_is_over(app, client, hotline):
    book_with_caller_id(client, 1)
    callback = the_callback(hotline)
    step(client, "/voice/incoming", 5)  # hears about the pending callback…
    with app.app_context():
        assert hotline.callback_desk().cancel(callback.id, "ops") == "cancelled"  # …which ops cancel
    for digits in ("1", "2"):
        root = step(client, f"/voice/en/callback/pending/{callback.id}", 5, Digits=digits)
        assert texts(root)[0] == PROMPTS.callback_over["en"], digits
        # On to the main menu in the language they answered in.
        assert root.find("Gather").get("action") == f"/voice/en/node/{CONFIG.menu.root}/choice?attempt=1"


@pytest.mark.parametrize("after_closing", [False, True])
def test_asking_again_while_the_callback_is_being_dialled_says_it_is_their_turn(
    app, client, clock, hotline, no_unexpected_http, after_closing
):
    callback = book_and_dial(app, client, clock, hotline, no_unexpected_http)
    assert hotline.callbacks.get(callback.id).status == "dialling"
    if after_closing:  # the attempt runs on past closing time; the caller meets the closed line
        clock.now = CLOSED_TIME
        step(client, "/voice/incoming", 2)
        step(client, TRANSFER, 2, Digits="0")
        step(client, OFFER_CHOICE, 2, Digits="2")
        root = step(client, "/voice/en/callback/number/answer?attempt=1", 2, Digits="1")
    else:
        root = book_with_caller_id(client, 2)  # the same number, asked for again as its call rings
    said = texts(root)[0]
    assert "—" not in said
    assert said == PROMPTS.callback_booked["en"].format(
        last4="5 6 7 8", position=1, reference=" ".join(str(callback.reference))
    )


def test_odd_keys_at_the_callback_number_steps_are_redacted_on_the_ticket(client, ticket_for):
    """One-key steps: more than one key may be a card or account number being typed."""
    step(client, TRANSFER, 4, Digits="0")
    step(client, OFFER_CHOICE, 4, Digits="2")
    step(client, "/voice/en/callback/number/answer?attempt=1", 4, Digits="4111111111111111")
    step(client, "/voice/en/callback/number/answer?attempt=2", 4, Digits="7")
    signed_post(client, "/voice/status", call_form(sid(4), CallStatus="completed"))
    inputs = [i["input"] for p in ticket_for(sid(4))["path"] if p["node"] == "callback_number" for i in p["inputs"]]
    assert inputs == ["[redacted]", "7"]
