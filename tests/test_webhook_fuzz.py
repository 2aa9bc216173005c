"""Fuzz every voice webhook the app has (read from its URL map, so a new one is covered the day it
lands): real and absurd path values, query strings and Twilio form fields, all signed. A live call
must always get TwiML back (or 204 where Twilio expects no body), never a 500: Twilio answers a
5xx, or a 4xx, on a live call with "an application error has occurred"."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from urllib.parse import quote

import pytest

from tests.conftest import CLOSED_TIME, OPEN_TIME
from tests.test_callbacks import HOTLINE_NUMBER, book_with_caller_id, sid, the_callback
from tests.twiml import call_form, signed_post

ODD_TEXT = ["", " ", "-1", "0", "99999999999999999999999", "x" * 300, "%00", "../..", "名前", "1e309", "NaN", "ａ"]

PATH_VALUES = {
    "lang": ["en", "ja", "zh", "fr", "EN", *ODD_TEXT],
    "greeted": ["1", "0", *ODD_TEXT],
    "node_id": ["main", "payment", "agent_payment", "complaint_merchant", "refund_how", "gone_node", *ODD_TEXT],
    "queue": ["payment", "account", "urgent", "nowhere", *ODD_TEXT],
    "agent_id": ["a101", "a103", "z999", *ODD_TEXT],
    "step": ["number", "entry", "readback", "elsewhere", *ODD_TEXT],
    "what": ["answer", "silence", "other", *ODD_TEXT],
    "callback_id": ["1", "2", "999999", *ODD_TEXT],
    "n": ["1", "0", "3", "999999999999"],
}

QUERIES = ["", "?attempt=1", "?attempt=3", "?attempt=0", "?attempt=-5", "?attempt=abc", "?attempt=" + "9" * 40]

FORM_VALUES = {
    "Digits": ["1", "2", "0", "9", "*", "#", "1#", "0312345678#", "9" * 200, "", "abc", "１", "hangup"],
    "SpeechResult": ["refund", "返金", "退款", "", "x" * 2000],
    "Confidence": ["0.9", "NaN", "-1", "abc"],
    "CallStatus": ["ringing", "in-progress", "completed", "busy", "no-answer", "failed", "canceled", "weird", ""],
    "CallDuration": ["12", "-3", "1e9", "NaN", ""],
    "QueueResult": ["bridged", "hangup", "leave", "queue-full", "redirected", "system-error", "error", "odd"],
    "QueueTime": ["5", "-1", "99999999999999", "NaN"],
    "RecordingUrl": ["https://api.twilio.com/2010-04-01/Accounts/AC/Recordings/RE1", "not a url", ""],
    "RecordingDuration": ["31", "0", "-1", "1e12", "NaN"],
    "RecordingSid": ["RE" + "1" * 32, "", "x"],
    "AnsweredBy": ["human", "machine_start", "fax", "unknown", ""],
    "DialCallStatus": ["completed", "no-answer", "busy", "failed", "canceled", "odd"],
    "From": ["+819012345678", "anonymous", "", "+1", "not-a-number", "+81" + "9" * 30],
    "ErrorCode": ["11200", "abc"],
}


ENDED = {"completed", "busy", "no-answer", "failed", "canceled"}
QUEUE_OVER = {"bridged", "hangup", "redirected"}


def voice_rules(app) -> list[str]:
    return sorted(rule.rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/voice/"))


def fill(rule: str, rng: random.Random) -> str:
    out, rest = "", rule
    while "<" in rest:
        before, _, tail = rest.partition("<")
        name, _, rest = tail.partition(">")
        name = name.split(":")[-1]
        value = rng.choice(PATH_VALUES[name])
        # Werkzeug would never route an empty or slashed segment here; put something in its place.
        # Percent-encoded as Twilio requests (and signs) a URL with a space or kanji in it.
        out += before + quote(value.replace("/", "_") or "_", safe="")
    return out + rest


def form_for(rng: random.Random, n: int) -> dict:
    form = call_form(sid(n))
    for field, values in FORM_VALUES.items():
        if rng.random() < 0.35:
            form[field] = rng.choice(values)
    return form


@pytest.fixture
def lived_in(app, client, clock):
    """A hotline with something in it: a booked callback, a caller on hold, agents known."""
    clock.now = OPEN_TIME
    book_with_caller_id(client, 1)
    the_callback(app.extensions["hotline"])
    signed_post(client, "/voice/incoming", call_form(sid(2), To=HOTLINE_NUMBER))
    return app


def test_every_voice_webhook_answers_odd_input_with_twiml_never_an_error(lived_in, client, clock, caplog):
    rng = random.Random(20261203)
    rules = voice_rules(lived_in)
    assert len(rules) >= 25  # the URL map was read, not an empty list
    answered: dict[str, set[int]] = {}
    for i in range(900):
        clock.now = CLOSED_TIME if i % 4 == 0 else OPEN_TIME
        rule = rules[i % len(rules)]
        path = fill(rule, rng) + rng.choice(QUERIES)
        form = form_for(rng, 2 + i % 7)
        response = signed_post(client, path, form)
        status = response.status_code
        answered.setdefault(rule, set()).add(status)
        body = response.get_data(as_text=True)
        assert status in (200, 204, 404), (path, status, body[:300])
        if status == 200:
            assert response.content_type.startswith("text/xml"), (path, response.content_type)
            root = ET.fromstring(body)
            assert root.tag == "Response", (path, body[:300])
            # Nothing to say only to a caller who is gone (a Record action after the hang-up), or
            # whose wait ended with a hang-up or a bridge (the Enqueue action then only reports).
            gone = form.get("CallStatus") in ENDED or form.get("Digits") == "hangup"
            gone = gone or ("/queued" in path and form.get("QueueResult") in QUEUE_OVER)
            assert len(root) or gone, (path, form, body[:300])
    # The views answered it themselves: the catch-all that turns a bug into an apology (and a
    # caller sent back to the main menu) is a safety net, not how odd input is handled.
    crashes = [r for r in caplog.records if r.getMessage().startswith("webhook ") and r.exc_info]
    assert not crashes, [(r.getMessage(), r.exc_info[1]) for r in crashes][:5]
    # A 404 only where Werkzeug's converters refuse the path (an int segment out of range), so
    # every rule was answered with TwiML at least once.
    assert all(200 in statuses or 204 in statuses for statuses in answered.values()), answered
