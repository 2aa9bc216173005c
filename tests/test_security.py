"""Only signed Twilio calls get TwiML; everything else gets a clear 4xx."""

from __future__ import annotations

import pytest
from twilio.request_validator import RequestValidator

from tests.conftest import AUTH_TOKEN, BASE_URL
from tests.twiml import call_form, parse, signed_post

WEBHOOKS = ["/voice/incoming", "/voice/status", "/voice/fallback", "/voice/en/node/main/choice?attempt=1"]


@pytest.mark.parametrize("path", WEBHOOKS)
def test_missing_signature_is_403(client, path):
    response = client.post(path, data=call_form(), base_url=BASE_URL)
    assert response.status_code == 403
    assert "X-Twilio-Signature" in response.get_data(as_text=True)


@pytest.mark.parametrize("path", WEBHOOKS)
def test_wrong_signature_is_403(client, path):
    response = signed_post(client, path, call_form(), token="not-the-token")
    assert response.status_code == 403


def test_signature_over_different_params_is_403(client):
    form = call_form(Digits="1")
    signature = RequestValidator(AUTH_TOKEN).compute_signature(BASE_URL + "/voice/incoming", form)
    form["Digits"] = "2"  # tampered after signing
    response = client.post("/voice/incoming", data=form, headers={"X-Twilio-Signature": signature}, base_url=BASE_URL)
    assert response.status_code == 403


def test_a_field_sent_twice_is_signed_over_both_values(client):
    """Twilio signs every value of a repeated field (sorted); both must match, and changing one
    of them is refused like any tampering."""
    from werkzeug.datastructures import MultiDict

    form = MultiDict(call_form())
    form.setlist("StirVerstat", ["TN-Validation-Passed-A", "TN-Validation-Passed-B"])
    signature = RequestValidator(AUTH_TOKEN).compute_signature(BASE_URL + "/voice/incoming", form)
    headers = {"X-Twilio-Signature": signature}
    assert client.post("/voice/incoming", data=form, headers=headers, base_url=BASE_URL).status_code == 200
    form.setlist("StirVerstat", ["TN-Validation-Passed-A", "TN-Validation-Failed"])
    assert client.post("/voice/incoming", data=form, headers=headers, base_url=BASE_URL).status_code == 403
    form.setlist("StirVerstat", ["TN-Validation-Passed-A"])
    assert client.post("/voice/incoming", data=form, headers=headers, base_url=BASE_URL).status_code == 403


def test_signed_against_public_base_url_not_the_internal_host(client):
    # The app sees http://10.0.0.5:8000 behind the proxy; Twilio signed the public https URL.
    response = signed_post(client, "/voice/incoming", call_form(), base_url="http://10.0.0.5:8000")
    parse(response)


def test_without_public_base_url_the_forwarded_proto_and_host_are_used(make_app):
    app = make_app(PUBLIC_BASE_URL=None)
    client = app.test_client()
    headers = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hotline.example.com"}
    response = signed_post(client, "/voice/incoming", call_form(), base_url="http://internal:8000", headers=headers)
    parse(response)
    unproxied = signed_post(client, "/voice/incoming", call_form(), base_url="http://internal:8000")
    assert unproxied.status_code == 403


def test_query_string_is_part_of_the_signature(client):
    form = call_form(Digits="1")
    signature = RequestValidator(AUTH_TOKEN).compute_signature(BASE_URL + "/voice/language?attempt=1", form)
    response = client.post(
        "/voice/language?attempt=3", data=form, headers={"X-Twilio-Signature": signature}, base_url=BASE_URL
    )
    assert response.status_code == 403


@pytest.mark.parametrize("call_sid", [None, "", "CA123", "XX" + "a" * 32, "CA" + "A" * 32])
def test_signed_request_that_is_not_a_call_is_400(client, call_sid):
    form = call_form()
    if call_sid is None:
        del form["CallSid"]
    else:
        form["CallSid"] = call_sid
    response = signed_post(client, "/voice/incoming", form)
    assert response.status_code == 400
    assert "CallSid" in response.get_data(as_text=True)


def test_oversized_body_is_413(client):
    form = call_form(Junk="x" * 40_000)
    response = signed_post(client, "/voice/incoming", form)
    assert response.status_code == 413


def _post_chunked(client, path: str, form: dict):
    """A signed webhook sent as Transfer-Encoding: chunked (no Content-Length), as a server hands
    it to the app: `wsgi.input_terminated`."""
    import io
    from urllib.parse import urlencode

    from twilio.request_validator import RequestValidator

    from tests.conftest import AUTH_TOKEN

    signature = RequestValidator(AUTH_TOKEN).compute_signature(BASE_URL + path, form)
    headers = {
        "X-Twilio-Signature": signature,
        "Content-Type": "application/x-www-form-urlencoded",
        "Transfer-Encoding": "chunked",
    }
    body = io.BytesIO(urlencode(form).encode())
    environ = {"wsgi.input": body, "wsgi.input_terminated": True, "CONTENT_LENGTH": ""}
    return client.post(path, base_url=BASE_URL, headers=headers, environ_overrides=environ)


def test_an_oversized_chunked_body_is_413_too(client):
    """Without Content-Length (chunked), werkzeug cuts the body at the limit and parses what it
    read: the cut form must be refused as too large, not checked as if it were the request."""
    response = _post_chunked(client, "/voice/incoming", call_form(Junk="x" * 40_000))
    assert response.status_code == 413, response.get_data(as_text=True)
    # A small chunked webhook is read whole and answered as usual.
    response = _post_chunked(client, "/voice/incoming", call_form())
    assert response.status_code == 200, response.get_data(as_text=True)


def test_get_is_405(client):
    assert client.get("/voice/incoming", base_url=BASE_URL).status_code == 405
