"""Dial the hotline in-process with the call walker, then write and show the call's ticket."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import click
from flask import Flask
from rq import SimpleWorker

from ivr.services import TICKETS_QUEUE
from ivr.simulator import CallWalker, Utterance, WalkError, gather_input
from ivr.tickets.migrate import upgrade
from ivr.tickets.store import ticket_json


def _parse_keys(keys: str) -> list[str | None]:
    return [None if k.strip() in ("", "-") else k.strip() for k in keys.split(",")]


def parse_at(text: str | None) -> datetime | None:
    """`--at`: an ISO 8601 time; without a zone, the hotline's own (config `hours.timezone`)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time, e.g. 2026-11-28T22:00") from exc
    return moment


def _seconds_answer(text: str) -> str:
    text = text.strip().removeprefix("rec:")
    if text == "hangup" or text.isdigit():
        return text
    raise click.BadParameter("a number of seconds (e.g. 12), or hangup")


def _keys_answer(text: str) -> str:
    """What the caller does at a menu: a typo is asked again, not pressed as keys."""
    text = text.strip()
    if text in ("", "-"):
        return ""
    if gather_input(text):
        return text
    raise click.BadParameter("keys (0-9, * or #), Enter for no input, say:<words>, or hangup")


def _queue_answer(text: str) -> str:
    text = text.strip()
    if text in ("hangup", "bridged", "queue-full") or (text.startswith("press:") and len(text) > 6):
        return text
    raise click.BadParameter("one of hangup, bridged, queue-full, press:<key>")


def try_call(
    app: Flask,
    keys: str | None,
    caller: str,
    called: str,
    at: datetime | None = None,
    shared: bool = False,
    verbose: bool = True,
) -> tuple[dict | None, list[str]]:
    """One simulated call. The hotline's clock follows the call's own timeline (the walker's
    `elapsed_s`: prompts spoken, timeouts, recordings, hold turns) from now, or from `at` (try
    peak hours, a holiday, after hours), so the ticket's times and duration read as a real call's.
    `shared` (the Redis of a running hotline, no `at`): never ahead of the real clock, or the
    call's seat, callback and events would carry times later than real callers' after it.
    `verbose`: the ticket worker's log too (RQ sets up its own handler at INFO otherwise).
    Returns the ticket and what went wrong on the way (dead air, say), for the exit code."""
    from callbacks.tickets import seed_reference_floor

    hotline = app.extensions["hotline"]
    if at is not None:
        if at.tzinfo is None:
            at = at.replace(tzinfo=hotline.config.current().hours.zone)
        click.echo(f"Calling at {at.isoformat()}")
    start = (at or datetime.now(UTC)).astimezone(UTC)
    timeline: list[CallWalker] = []

    def clock() -> datetime:
        simulated = start + timedelta(seconds=timeline[0].elapsed_s if timeline else 0.0)
        return min(simulated, datetime.now(UTC)) if shared and at is None else simulated

    hotline.clock = clock
    upgrade(app.config["DATABASE_URL"])
    with app.app_context():
        seed_reference_floor()
    client = app.test_client()
    base = app.config.get("PUBLIC_BASE_URL") or "http://localhost"

    def transport(url: str, form: dict, headers: dict) -> tuple[int, str, str]:
        response = client.post(url.removeprefix(base.rstrip("/")), data=form, headers=headers, base_url=base)
        return response.status_code, response.content_type or "", response.get_data(as_text=True)

    def on_say(utterance: Utterance) -> None:
        click.echo(f"  [{utterance.language}] {utterance.text}")

    def on_input(kind: str) -> str | None:
        try:
            return ask(kind)
        except click.Abort:  # Ctrl-D or Ctrl-C at a prompt: the caller hangs up
            click.echo("\n  (the caller hangs up)")
            return "hangup"

    def ask(kind: str) -> str | None:
        if kind == "queue":
            question = "  (in queue) what happens: hangup, bridged, queue-full, or press:<key> at the first offer"
            return "queue:" + click.prompt(question, default="hangup", value_proc=_queue_answer)
        if kind == "record":
            seconds = click.prompt(
                "  (recording) seconds to speak, or 'hangup'", default="8", value_proc=_seconds_answer
            )
            return "hangup" if seconds == "hangup" else f"rec:{seconds}"
        answer = click.prompt(
            "  keys (Enter = no input, 'say:words', 'hangup')", default="", show_default=False, value_proc=_keys_answer
        )
        return answer or None

    walker = CallWalker(
        transport,
        app.config["TWILIO_AUTH_TOKEN"],
        base_url=base,
        caller=caller,
        called=called,
        on_say=on_say,
        on_input=None if keys is not None else on_input,
        # Held to the real clock, the call's times are real ones: its duration too, or the ticket
        # would say 73 s for a call that started and ended a second apart.
        duration_of=(lambda: (clock() - start).total_seconds()) if shared and at is None else None,
    )
    timeline.append(walker)
    click.echo(f"Calling the hotline as {caller} ...")
    try:
        result = walker.dial(_parse_keys(keys) if keys is not None else [])
    except WalkError as exc:  # the script asked for something Twilio would not do, or the TwiML was wrong
        click.echo(f"  PROBLEM: {exc}", err=True)
        raise SystemExit(1) from exc
    for problem in result.problems:
        click.echo(f"  PROBLEM: {problem}", err=True)
    click.echo(f"Call ended ({result.ended}). Ticket:")
    with app.app_context():
        hotline.dispatch_due_tickets()
        SimpleWorker([TICKETS_QUEUE], connection=hotline.redis).work(
            burst=True, logging_level="INFO" if verbose else "WARNING"
        )
        # Beside a running hotline (the same Redis), its worker may have taken the job: wait
        # for it to land rather than show nothing.
        deadline = time.monotonic() + 10
        while not (tickets := hotline.store.find(call_sid=result.call_sid)) and time.monotonic() < deadline:
            time.sleep(0.2)
    return (ticket_json(tickets[0]) if tickets else None), result.problems
