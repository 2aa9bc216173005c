"""Redis down, the fallback URL, and logs that never show phone numbers or entered digits."""

from __future__ import annotations

import logging
from datetime import datetime

from ivr.localredis import free_port
from ivr.menus.loader import load_config
from tests.conftest import SHIPPED_CONFIG
from tests.twiml import call_form, parse, says, signed_post, verbs

CONFIG = load_config(SHIPPED_CONFIG)


def test_callers_are_served_with_redis_down(make_app, caplog):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    client = app.test_client()
    root = parse(signed_post(client, "/voice/incoming", call_form()))
    assert verbs(root) == ["Gather", "Redirect"]
    root = parse(signed_post(client, "/voice/en/node/main/choice?attempt=1", call_form(Digits="2")))
    assert says(root.find("Gather"))[0].text == CONFIG.menu.nodes["payment"].prompt["en"]
    assert signed_post(client, "/voice/status", call_form(CallStatus="completed")).status_code == 204
    assert client.get("/healthz").status_code == 503
    assert client.get("/livez").status_code == 200  # what a load balancer probes: still serving
    assert "Redis unavailable" in caplog.text


def test_a_call_whose_start_met_redis_down_still_has_its_numbers_and_start_on_the_ticket(make_app, clock, ticket_for):
    """Redis was down for the call's first webhooks and back for its final status: the ticket
    takes the numbers from the status callback and its start from Twilio's duration."""
    down = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").test_client()
    parse(signed_post(down, "/voice/incoming", call_form(CallStatus="ringing")))
    client = make_app().test_client()
    done = call_form(CallStatus="completed", CallDuration="30")
    assert signed_post(client, "/voice/status", done).status_code == 204
    ticket = ticket_for(done["CallSid"])
    assert (ticket["caller"], ticket["called"]) == (done["From"], done["To"])
    assert ticket["duration_s"] == 30
    started, ended = (datetime.fromisoformat(ticket[k]) for k in ("started_at", "ended_at"))
    assert ended == clock.now and (ended - started).total_seconds() == 30


def test_fallback_is_static_and_works_without_redis_or_database(make_app):
    app = make_app(
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1",
    )
    form = call_form(ErrorCode="11200", ErrorUrl="https://hotline.example.com/voice/incoming")
    root = parse(signed_post(app.test_client(), "/voice/fallback", form))
    assert verbs(root) == ["Say", "Say", "Say", "Hangup"]
    assert [s.get("language") for s in says(root)] == ["ja-JP", "cmn-CN", "en-US"]


def test_fallback_dials_the_backup_number_when_configured(make_app, tmp_path):
    text = SHIPPED_CONFIG.read_text(encoding="utf-8").replace("dial: null", 'dial: "+81355550100"')
    path = tmp_path / "hotline.yaml"
    path.write_text(text, encoding="utf-8")
    root = parse(signed_post(make_app(HOTLINE_CONFIG=str(path)).test_client(), "/voice/fallback", call_form()))
    assert verbs(root)[-1] == "Dial" and root.find("Dial").text == "+81355550100"


def test_logs_never_contain_full_phone_numbers_or_digits(walker, run_jobs, caplog):
    caplog.set_level(logging.DEBUG)
    caller = "+819087654321"
    result = walker(caller=caller).dial(["3", "4", "1", "rec:9"])
    walker(caller=caller).dial(["3", "123456789", "hangup"])
    run_jobs()
    assert result.ended == "hangup"
    logged = "\n".join(handler_text for handler_text in caplog.messages)
    assert "87654321" not in logged and "9087654321" not in logged
    assert "123456789" not in logged
    assert "+81******4321" in logged  # masked, so calls can still be told apart


def test_a_withheld_caller_id_reads_as_such_in_a_log_and_an_identity_does_not():
    from ivr.privacy import mask_number

    assert [mask_number(x) for x in ("anonymous", "Restricted", "client:alice", "+819012345678")] == [
        "anonymous",
        "Restricted",
        "************",
        "+81******5678",
    ]


def test_a_recording_made_while_redis_is_down_is_confirmed_and_its_sid_logged(make_app, caplog):
    app = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    form = call_form(
        RecordingUrl="https://api.twilio.com/rec/RE1", RecordingDuration="20", RecordingSid="RE" + "1" * 32, Digits="#"
    )
    root = parse(signed_post(app.test_client(), "/voice/en/node/complaint_merchant/recorded", form))
    assert [s.text for s in says(root)] == [CONFIG.prompts.message_saved["en"], CONFIG.prompts.goodbye["en"]]
    assert "RE" + "1" * 32 in caplog.text


def test_tracebacks_are_scrubbed_too(caplog):
    from ivr.privacy import ScrubFilter

    handler = logging.StreamHandler()
    handler.addFilter(ScrubFilter())
    import io

    stream = io.StringIO()
    handler.setStream(stream)
    logger = logging.getLogger("scrub-test")
    logger.addHandler(handler)
    try:
        raise ValueError("bad caller +819012345678")
    except ValueError:
        logger.exception("failed for %s", "+819012345678")
    logger.removeHandler(handler)
    assert "9012345678" not in stream.getvalue()
    assert "+81******5678" in stream.getvalue() and "ValueError" in stream.getvalue()


def test_an_unexpected_failure_answers_with_an_apology_and_the_main_menu(client, app):
    # Corrupted state in Redis (a reference that is not a number) makes the Record action fail
    # inside the flow: the caller must still get TwiML, never a 500 or Twilio's error message.
    sid = "CA" + "d" * 32
    app.extensions["hotline"].redis.hset(f"call:{{{sid}}}", "ref", "not-a-number")
    form = call_form(sid, RecordingUrl="https://api.twilio.com/rec/RE2", RecordingDuration="12", Digits="#")
    root = parse(signed_post(client, "/voice/en/node/complaint_merchant/recorded", form))
    assert verbs(root) == ["Say", "Redirect"]
    assert root.find("Say").text == CONFIG.prompts.recover["en"]
    assert root.find("Redirect").text == "/voice/en/node/main"
