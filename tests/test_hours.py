"""Business hours: weekly schedule, Japanese public holidays, closed dates, special hours, and
how the next opening is said in each language."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ivr.hours import Hours, describe_opening
from ivr.menus import render
from ivr.menus.loader import load_config
from tests.conftest import CLOSED_TIME, SHIPPED_CONFIG
from tests.twiml import call_form, parse, says, signed_post, verbs

CONFIG = load_config(SHIPPED_CONFIG)
HOURS = Hours(CONFIG.hours)
TOKYO = ZoneInfo("Asia/Tokyo")


def tokyo(*args) -> datetime:
    return datetime(*args, tzinfo=TOKYO)


@pytest.mark.parametrize(
    ("when", "is_open"),
    [
        (tokyo(2026, 11, 24, 8, 59), False),  # Tuesday before 9:00
        (tokyo(2026, 11, 24, 9, 0), True),
        (tokyo(2026, 11, 24, 19, 59), True),
        (tokyo(2026, 11, 24, 20, 0), False),
        (tokyo(2026, 11, 23, 12, 0), False),  # Labour Thanksgiving Day (public holiday, Monday)
        (tokyo(2026, 11, 28, 10, 0), True),  # Saturday 10-18
        (tokyo(2026, 11, 29, 12, 0), False),  # Sunday
        (tokyo(2026, 12, 30, 12, 0), True),  # special hours 10-15
        (tokyo(2026, 12, 30, 16, 0), False),
        (tokyo(2026, 12, 31, 12, 0), False),  # closed date
    ],
)
def test_is_open(when, is_open):
    assert HOURS.is_open(when.astimezone(UTC)) is is_open


def test_a_closing_is_where_the_opening_hours_stop_not_where_a_range_is_cut():
    """Ranges cannot cross midnight, so a late line is written `…-24:00` and `00:00-…` the next
    day, and a day may be cut in two at noon: neither cut is a closing callers are told of."""
    from ivr.menus.model import BusinessHours

    def hours(weekly: dict) -> Hours:
        return Hours(BusinessHours.model_validate({"timezone": "Asia/Tokyo", "weekly": weekly}))

    every_day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    assert hours({d: ["00:00-24:00"] for d in every_day}).closing(tokyo(2026, 11, 24, 23, 45)) is None
    late = hours({d: ["00:00-02:00", "22:00-24:00"] for d in every_day})
    assert late.closing(tokyo(2026, 11, 24, 23, 45)) == tokyo(2026, 11, 25, 2, 0)
    assert late.closing(tokyo(2026, 11, 25, 1, 0)) == tokyo(2026, 11, 25, 2, 0)
    halves = hours({"tue": ["09:00-12:00", "12:00-18:00"]})
    assert halves.closing(tokyo(2026, 11, 24, 10, 0)) == tokyo(2026, 11, 24, 18, 0)
    assert HOURS.closing(tokyo(2026, 11, 24, 19, 0)) == tokyo(2026, 11, 24, 20, 0)  # the shipped week
    assert HOURS.closing(tokyo(2026, 11, 24, 21, 0)) is None  # closed


def test_next_opening_skips_sunday_and_the_holiday():
    # Saturday 22:00 -> Sunday closed -> Monday 23 Nov 2026 is a holiday -> Tuesday 09:00.
    assert HOURS.next_opening(tokyo(2026, 11, 21, 22, 0)) == tokyo(2026, 11, 24, 9, 0)


def test_next_opening_over_new_year():
    assert HOURS.next_opening(tokyo(2026, 12, 30, 16, 0)) == tokyo(2027, 1, 4, 9, 0)


@pytest.mark.parametrize(
    ("lang", "expected"),
    [("en", "on Monday, November 30, at 9 AM"), ("ja", "11月30日、月曜日、9時"), ("zh", "11月30日星期一9点")],
)
def test_opening_is_said_in_the_callers_language_naming_the_day(lang, expected):
    opening = HOURS.next_opening(CLOSED_TIME)
    assert describe_opening(opening, CLOSED_TIME, CONFIG.languages[lang]) == expected


def test_today_and_tomorrow_are_said_with_the_weekday_and_without_a_date():
    early = tokyo(2026, 11, 24, 7, 0)  # a Tuesday
    assert describe_opening(HOURS.next_opening(early), early, CONFIG.languages["en"]) == "today, Tuesday, at 9 AM"
    late = tokyo(2026, 11, 24, 21, 0)
    assert describe_opening(HOURS.next_opening(late), late, CONFIG.languages["ja"]) == "明日、水曜日、9時"
    assert describe_opening(HOURS.next_opening(late), late, CONFIG.languages["zh"]) == "明天星期三9点"


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@pytest.mark.parametrize(
    ("lang", "booked", "expected"),
    [
        ("en", tokyo(2026, 11, 24, 9, 1), "Callback: payment request in Mandarin, booked 59 minutes ago, ticket 4 2."),
        (
            "en",
            tokyo(2026, 11, 24, 9, 0),
            "Callback: payment request in Mandarin, booked today, Tuesday, at 9 AM, ticket 4 2.",
        ),
        (
            "en",
            tokyo(2026, 11, 23, 19, 40),
            "Callback: payment request in Mandarin, booked on Monday, November 23, at 7:40 PM, ticket 4 2.",
        ),
        (
            "ja",
            tokyo(2026, 11, 23, 19, 40),
            "折り返しのお電話です。支払い、中国語、11月23日、月曜日、19時40分のご依頼、受付番号4 2です。",
        ),
        ("zh", tokyo(2026, 11, 23, 19, 40), "回拨任务：支付，中文，11月23日星期一19点40分申请，受理编号4 2。"),
    ],
)
def test_the_callback_whisper_tells_an_old_booking_by_its_time(lang, booked, expected):
    now = tokyo(2026, 11, 24, 10, 0)
    root = ET.fromstring(
        str(render.callback_whisper(CONFIG, lang, "payment", "zh", ms(booked), ms(now), 42, "/accept"))
    )
    assert verbs(root) == ["Gather", "Hangup"]
    [say] = says(root.find("Gather"))
    assert say.text.startswith(expected) and say.get("language") == CONFIG.languages[lang].say_language


def test_after_hours_transfer_says_when_the_line_opens_and_offers_a_message(client, clock):
    clock.now = CLOSED_TIME
    root = parse(signed_post(client, "/voice/zh/node/refund/choice?attempt=1", call_form(Digits="3")))
    assert verbs(root) == ["Gather", "Say", "Hangup"]
    spoken = [s.text for s in says(root.find("Gather"))]
    assert "星期一" in spoken[0] and "9点" in spoken[0]
    assert spoken[-1] == CONFIG.prompts.closed_offer_message["zh"].format(key="1")
    assert all(s.get("language") == "cmn-CN" for s in says(root))


def test_after_hours_caller_leaves_a_message_that_lands_on_the_ticket(walker, ticket_for, clock):
    clock.now = CLOSED_TIME
    result = walker().dial(["1", "0", "1", "rec:14"])
    text = result.text()
    assert "月曜日" in text
    ticket = ticket_for(result.call_sid)
    assert ticket["outcome"] == "message_left"
    assert ticket["recordings"][0]["duration_s"] == 14
    assert ticket["recordings"][0]["node"] == "leave_message"
    spoken_reference = " ".join(str(ticket["id"]))
    assert spoken_reference in result.said[-2].text
    assert result.said[-1].text == CONFIG.prompts.goodbye["ja"]


def test_after_hours_caller_who_hangs_up_is_an_after_hours_ticket(walker, ticket_for, clock):
    clock.now = CLOSED_TIME
    result = walker().dial(["3", "0", None])
    assert result.said[-1].text == CONFIG.prompts.goodbye["en"] and not result.problems
    assert ticket_for(result.call_sid)["outcome"] == "after_hours"


def test_self_service_works_around_the_clock(walker, ticket_for, clock):
    clock.now = CLOSED_TIME
    result = walker().dial(["3", "3", "2", "hangup"])
    assert CONFIG.menu.nodes["refund_status"].message["en"] in result.text()
    assert ticket_for(result.call_sid)["outcome"] == "self_service"


def test_back_from_a_menus_agent_transfer_on_the_closed_line_returns_to_that_menu(walker, clock):
    """In the account menu the caller presses 0; the line is closed and the offer says "press
    star to go back to the menu": back means the account menu, where they were."""
    clock.now = CLOSED_TIME
    result = walker().dial(["3", "1", "0", "*", "hangup"])
    account = CONFIG.menu.nodes["account"].prompt["en"]
    assert [u.text for u in result.said].count(account) == 2
    assert result.said[-1].text == account


def test_the_callback_whisper_of_a_booking_made_seconds_ago_says_one_minute():
    now = tokyo(2026, 11, 24, 10, 0)
    booked = now - timedelta(seconds=20)  # dialled at once: an agent was free
    root = ET.fromstring(str(render.callback_whisper(CONFIG, "en", "payment", "en", ms(booked), ms(now), 42, "/a")))
    [say] = says(root.find("Gather"))
    assert say.text.startswith("Callback: payment request in English, booked 1 minute ago, ticket 4 2.")
