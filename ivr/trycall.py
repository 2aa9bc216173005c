"""Dial the hotline in-process with the call walker, then write and show the call's ticket."""

from __future__ import annotations

import click
from flask import Flask
from rq import SimpleWorker

from ivr.services import TICKETS_QUEUE
from ivr.simulator import CallWalker, Utterance
from ivr.tickets.migrate import upgrade
from ivr.tickets.store import ticket_json


def _parse_keys(keys: str) -> list[str | None]:
    return [None if k.strip() in ("", "-") else k.strip() for k in keys.split(",")]


def try_call(app: Flask, keys: str | None, caller: str, called: str) -> dict | None:
    from callbacks.tickets import seed_reference_floor

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
        if kind == "queue":
            choices = click.Choice(["hangup", "bridged", "queue-full"])
            return "queue:" + click.prompt("  (in queue) what happens", default="hangup", type=choices)
        if kind == "record":
            seconds = click.prompt("  (recording) seconds to speak, or 'hangup'", default="8")
            return "hangup" if seconds == "hangup" else f"rec:{seconds}"
        answer = click.prompt("  keys (Enter = no input, 'say:words', 'hangup')", default="", show_default=False)
        return answer or None

    walker = CallWalker(
        transport,
        app.config["TWILIO_AUTH_TOKEN"],
        base_url=base,
        caller=caller,
        called=called,
        on_say=on_say,
        on_input=None if keys is not None else on_input,
    )
    click.echo(f"Calling the hotline as {caller} ...")
    result = walker.dial(_parse_keys(keys) if keys is not None else [])
    for problem in result.problems:
        click.echo(f"  PROBLEM: {problem}", err=True)
    click.echo(f"Call ended ({result.ended}). Ticket:")
    with app.app_context():
        hotline = app.extensions["hotline"]
        hotline.dispatch_due_tickets()
        SimpleWorker([TICKETS_QUEUE], connection=hotline.redis).work(burst=True)
        tickets = hotline.store.find(call_sid=result.call_sid)
    return ticket_json(tickets[0]) if tickets else None
