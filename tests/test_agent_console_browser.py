"""The agent console in a real headless Chromium (Debian's, driven by Playwright): sign in, go
available, see the screen pop of the caller being connected, and save a disposition that lands
on the ticket. CI installs Chromium (.ci/run); elsewhere the test is skipped without it."""

from __future__ import annotations

import os
import shutil
import threading

import pytest
from werkzeug.serving import make_server

from ivr.handlers.agent import agent_token
from tests.conftest import OPS_TOKEN
from tests.test_agent_console import CALLER, connect_call
from tests.twiml import call_form, signed_post

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def live_server(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def page(live_server):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.set_default_timeout(10_000)
        page.goto(live_server + "/agent")
        yield page
        browser.close()


def sign_in(page) -> None:
    page.fill("#agent-id", "a101")
    page.fill("#agent-token", agent_token(OPS_TOKEN, "a101"))
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#who")).to_have_text("Sato Yui (a101)")


def test_agent_console_in_a_real_browser(app, client, clock, page, run_jobs, ticket_for):
    routing = app.extensions["hotline"].routing
    page.fill("#agent-id", "a101")
    page.fill("#agent-token", "not-the-token")
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#signin-error")).to_contain_text("sign in")

    page.fill("#agent-token", agent_token(OPS_TOKEN, "a101"))
    page.click("#signin-form button[type=submit]")
    expect(page.locator("#who")).to_have_text("Sato Yui (a101)")
    page.click("button[data-status=available]")
    expect(page.locator("#status-text")).to_have_text("now: available")
    assert routing.agents()["a101"][0] == "available"

    connect_call(app, client, clock)  # a caller is routed to Sato and she accepts
    run_jobs()  # (the caller's earlier ticket)
    expect(page.locator("#pop")).to_be_visible()
    expect(page.locator("#pop-branch")).to_have_text("payment")
    expect(page.locator("#pop-language")).to_have_text("日本語 (ja)")
    expect(page.locator("#pop-waited")).to_have_text("3 min (180 s)")
    expect(page.locator("#pop-path li")).to_have_text(["language", "main", "payment", "agent_payment"])
    expect(page.locator("#pop-earlier li")).to_have_count(1)

    page.select_option("#disposition", "resolved")
    page.fill("#notes", "explained the pending authorisation")
    page.click("#wrapup-form button[type=submit]")
    expect(page.locator("#wrapup-result")).to_have_text("saved to ticket")
    page.screenshot(path=os.environ.get("AGENT_CONSOLE_SCREENSHOT", "/tmp/agent-console.png"))

    signed_post(client, "/voice/status", call_form(CALLER, CallStatus="completed", CallDuration="420"))
    ticket = ticket_for(CALLER)
    assert (ticket["agent"], ticket["disposition"], ticket["notes"]) == (
        "a101",
        "resolved",
        "explained the pending authorisation",
    )


def test_an_unsaved_wrap_up_outlives_the_wrap_up_time_and_the_next_call_starts_clean(app, client, clock, page):
    routing = app.extensions["hotline"].routing
    sign_in(page)
    connect_call(app, client, clock)
    expect(page.locator("#pop")).to_be_visible()
    page.fill("#notes", "half-typed notes")
    routing.set_agent_status("a101", "available", 0)  # wrap-up time is over: the API shows no call
    expect(page.locator("#wrapup-result")).to_contain_text("the call has ended")
    expect(page.locator("#pop")).to_be_visible()
    expect(page.locator("#notes")).to_have_value("half-typed notes")
    page.click("#wrapup-form button[type=submit]")
    expect(page.locator("#wrapup-result")).to_have_text("saved to ticket")
    expect(page.locator("#pop")).to_be_hidden()

    # The next caller pops with a clean form (the saved notes are still in the hidden one).
    assert page.locator("#notes").input_value() == "half-typed notes"
    routing.set_agent_status("a101", "busy", 0, call_sid="CA" + "7" * 32)
    expect(page.locator("#pop")).to_be_visible()
    expect(page.locator("#notes")).to_have_value("")


def test_an_offer_the_agent_never_took_leaves_no_wrap_up_behind(app, client, clock, page):
    routing = app.extensions["hotline"].routing
    sign_in(page)
    routing.set_agent_status("a101", "reserved", 0, call_sid=CALLER)  # the whisper rings
    expect(page.locator("#pop")).to_be_visible()
    routing.set_agent_status("a101", "away", 0)  # it rang out
    expect(page.locator("#pop")).to_be_hidden()
