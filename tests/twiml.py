"""Structural TwiML helpers for tests: parse once, then look at verbs, nesting and attributes."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from twilio.request_validator import RequestValidator

from tests.conftest import AUTH_TOKEN, BASE_URL


def parse(response) -> ET.Element:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/xml")
    root = ET.fromstring(response.get_data(as_text=True))
    assert root.tag == "Response"
    return root


def verbs(root: ET.Element) -> list[str]:
    return [child.tag for child in root]


def says(element: ET.Element) -> list[ET.Element]:
    return list(element.iter("Say"))


def signed_post(client, path: str, form: dict, token: str = AUTH_TOKEN, base: str = BASE_URL, **kwargs):
    signature = RequestValidator(token).compute_signature(base + path, form)
    headers = {"X-Twilio-Signature": signature, **kwargs.pop("headers", {})}
    return client.post(path, data=form, headers=headers, base_url=kwargs.pop("base_url", base), **kwargs)


def call_form(call_sid: str = "CA" + "a" * 32, **extra: str) -> dict:
    form = {
        "CallSid": call_sid,
        "AccountSid": "AC" + "0" * 32,
        "From": "+819012345678",
        "To": "+815012345678",
        "CallStatus": "in-progress",
        "ApiVersion": "2010-04-01",
        "Direction": "inbound",
    }
    form.update(extra)
    return form


def queue_caller(client, path: str, form: dict):
    """Post a transfer webhook; if the caller first hears the estimate, stay on the line the way
    Twilio runs it (the Gather times out, the Redirect joins the queue). Returns the Enqueue
    document."""
    root = parse(signed_post(client, path, form))
    redirect = root.find("Redirect")
    if root.find("Enqueue") is None and redirect is not None and "/join" in redirect.text:
        root = parse(signed_post(client, redirect.text, {k: v for k, v in form.items() if k != "Digits"}))
    assert root.find("Enqueue") is not None, [c.tag for c in root]
    return root
