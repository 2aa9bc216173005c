"""The baseline for bench/webhooks.py: the least a Flask webhook can do.

One catch-all POST route that parses the form body exactly as the hotline's views do
(`request.form`) and answers a fixed TwiML document as text/xml. Served by gunicorn with the
same settings as the hotline, so the ratio of the two throughputs is what the hotline's own
work (signature check, flow, TwiML rendering, Redis) costs on top of Flask + gunicorn.
"""

from __future__ import annotations

import gc

from flask import Flask, Response, request

TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Hello</Say></Response>'

app = Flask(__name__)


@app.post("/", defaults={"path": ""})
@app.post("/<path:path>")
def webhook(path: str) -> Response:
    request.form.get("CallSid")  # parses the whole urlencoded body, like Call.from_form
    return Response(TWIML, mimetype="text/xml")


# As wsgi.py does for the hotline: start-up objects out of the collector's sight.
gc.collect()
gc.freeze()
