"""Only signed Twilio calls reach the voice webhooks.

Order of checks: oversized body (413), signature (403), then the form must be a call (400).
The signed URL is PUBLIC_BASE_URL + path + query when set (the origin Twilio was given), else
the URL as seen through X-Forwarded-Proto/Host (ProxyFix is installed by the app factory).
"""

from __future__ import annotations

import hmac
import re
from functools import lru_cache
from urllib.parse import quote

from flask import Config, Request, abort, current_app, request
from twilio.request_validator import RequestValidator

CALL_SID = re.compile(r"^CA[0-9a-f]{32}$")


@lru_cache(maxsize=4)
def _validator(token: str) -> RequestValidator:
    return RequestValidator(token)


# Characters Twilio leaves as they are in a URL's path; anything else it sends percent-encoded.
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


@lru_cache(maxsize=1024)
def _cached_wire_path(path: str) -> str:
    return quote(path, safe=_PATH_SAFE)


def _wire_path(path: str) -> str:
    """The path as it went on the wire. Real paths repeat (one per node and step), so they are
    kept; this runs before the signature is checked, so long ones (no route has them) are not."""
    return _cached_wire_path(path) if len(path) <= 200 else quote(path, safe=_PATH_SAFE)


def signed_url(req: Request, config: Config, encoded: bool = True) -> str:
    """The URL Twilio signed, exactly as it requested it: the path percent-encoded as it went on
    the wire (the WSGI path is decoded), the raw query string. `encoded=False`: the decoded path,
    the other reading of a URL configured with non-ASCII characters."""
    query = req.query_string.decode("latin-1")
    path = _wire_path(req.path) if encoded else req.path
    tail = path + (f"?{query}" if query else "")
    base = config.get("PUBLIC_BASE_URL")
    if base:
        return base.rstrip("/") + tail
    return req.host_url.rstrip("/") + tail


class _SignedParams(dict):
    """The form as the validator reads it, at half the cost: its `get_values` asks for `getall`
    first, which werkzeug's MultiDict lacks, and pays an AttributeError per parameter (~11 µs of
    ~24 for a webhook's 14 fields). The keys are the form's; `getall` returns every value."""

    __slots__ = ("form",)

    def getall(self, name: str) -> list[str]:
        return self.form.getlist(name)


def _signed_params(form) -> _SignedParams:  # noqa: ANN001 - a werkzeug MultiDict
    params = _SignedParams.fromkeys(form.keys())
    params.form = form
    return params


def _signature_matches(validator: RequestValidator, req: Request, config: Config, form, signature: str) -> bool:  # noqa: ANN001
    url = signed_url(req, config)
    form = _signed_params(form)
    # One HMAC for the URL as requested; the validator's full check (which also tries the URL
    # with and without the default port, as Twilio signs either way) only when that misses.
    if hmac.compare_digest(validator.compute_signature(url, form), signature):
        return True
    if validator.validate(url, form, signature):
        return True
    # The other reading, for a URL configured with raw non-ASCII characters only: for an ASCII
    # path the decoded form of one URL can be the wire form of another ("%252F" → "%2F"), and
    # a signature for one must never pass for the other.
    if req.path.isascii():
        return False
    return validator.validate(signed_url(req, config, encoded=False), form, signature)


def require_twilio_call() -> None:
    """before_request for every webhook: abort with a clear 4xx unless Twilio signed it."""
    # The proxies resolved once: this runs on every webhook, and each proxy access costs.
    req, config = request._get_current_object(), current_app.config
    limit = config["MAX_CONTENT_LENGTH"]
    if req.content_length is not None and req.content_length > limit:
        abort(413, description=f"request body over {limit} bytes is not a Twilio webhook")
    signature = req.headers.get("X-Twilio-Signature")
    if not signature:
        abort(403, description="missing X-Twilio-Signature: only Twilio may call this URL")
    if not signature.isascii():  # base64 is ASCII; compare_digest would raise on anything else
        abort(403, description="X-Twilio-Signature is not a signature")
    form = req.form
    if not req.headers.get("Content-Length") and getattr(req.stream, "is_exhausted", False):
        # A body without Content-Length (chunked) is cut at the limit and what was read is
        # parsed: a stream read to its limit was longer than a webhook is.
        abort(413, description=f"request body over {limit} bytes is not a Twilio webhook")
    if not _signature_matches(_validator(config["TWILIO_AUTH_TOKEN"]), req, config, form, signature):
        abort(403, description="X-Twilio-Signature does not match this request")
    if not CALL_SID.match(form.get("CallSid", "")):
        abort(400, description="not a Twilio call: CallSid missing or malformed")
    # The error handler answers with TwiML (and logs to the call) only past this point. On the
    # request, not `g`: an app context pushed around several requests (the CLI, tests) shares g.
    req.environ["hotline.twilio_call"] = True
