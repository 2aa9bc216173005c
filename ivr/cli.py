"""`flask hotline ...` commands: check a config, try a call, run the worker, migrate, resync."""

from __future__ import annotations

import json
import sys
import threading

import click
from flask import Flask, current_app
from flask.cli import AppGroup

hotline = AppGroup("hotline", help="Hotline operations.")


def init_app(app: Flask) -> None:
    app.cli.add_command(hotline)


def check_file(path: str) -> int:
    """Print OK or every problem with file, line, YAML path and reason; return an exit code."""
    from ivr.menus.loader import ConfigError, load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(problem, err=True)
        click.echo(f"{path}: {exc.summary()}; this config would be refused", err=True)
        return 1
    click.echo(
        f"{path}: OK - {len(config.languages)} languages, {len(config.menu.nodes)} nodes, "
        f"{len(config.queues)} queues, hours in {config.hours.timezone}"
    )
    return 0


@hotline.command("check")
@click.argument("path", required=False)
def check_command(path: str | None) -> None:
    """Validate a config file (default: the live one)."""
    sys.exit(check_file(path or current_app.config["HOTLINE_CONFIG"]))


@hotline.command("db-upgrade")
def db_upgrade_command() -> None:
    """Bring the ticket database to the newest schema."""
    from callbacks.tickets import seed_reference_floor
    from ivr.tickets.migrate import upgrade

    upgrade(current_app.config["DATABASE_URL"])
    seed_reference_floor()
    click.echo("ticket database is up to date")


@hotline.command("worker")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
def worker_command(burst: bool) -> None:
    """Run an RQ worker (with the scheduler) for the hotline's queues."""
    from callbacks.dispatcher import dispatch_once, run_dispatcher
    from callbacks.tickets import seed_reference_floor
    from ivr.services import services
    from ivr.settings import dial_settings_missing

    seed_reference_floor()
    hotline_services = services()
    hotline_services.callbacks.index_dialling()  # callbacks dialling from before the sweep's index
    missing = dial_settings_missing(current_app.config)
    if missing and hotline_services.config.current().config.callbacks.enabled:
        click.echo(
            f"warning: {', '.join(missing)} unset: agents cannot be connected, and callbacks wait in line "
            "undialled (they keep their places) until these are set"
        )
    if not missing:
        # Build the REST client before forking: each job's work-horse would import it again
        # (~85 ms a dial, bench/callbacks.py).
        client = hotline_services.twilio()
        client.calls  # noqa: B018 - loads the Calls and Messages modules
        client.messages  # noqa: B018
    stop = threading.Event()
    app = current_app._get_current_object()
    dispatcher = threading.Thread(target=run_dispatcher, args=(app, stop), name="dispatcher", daemon=True)
    dispatcher.start()
    if burst:  # a burst run should find what is already due
        dispatch_once()
    try:
        worker = build_worker(current_app.config["REDIS_URL"])
        worker.work(burst=burst, with_scheduler=True)
    finally:
        stop.set()


def build_worker(redis_url: str):  # noqa: ANN201 - an rq Worker
    """The RQ worker, on a Redis client of its own. RQ raises its pool's socket timeout above
    its dequeue timeout (a minute; our blocking waits are shorter, `callbacks/reliable.py`) —
    but only for connections opened after that; one the app's client (2 s timeout) had already
    opened would end a wait after 2 s, and RQ quits on that timeout. Its own client has no open
    connection to reuse."""
    from redis import Redis

    from callbacks.reliable import ReliableQueue, ReliableWorker
    from ivr.forksafe import protect
    from ivr.services import CALLBACKS_QUEUE, ROUTING_QUEUE, TICKETS_QUEUE

    redis = Redis.from_url(redis_url, socket_connect_timeout=2, health_check_interval=30)
    protect(redis.connection_pool)  # RQ's pub/sub thread uses it while the worker forks
    # Routing first: a caller is waiting on it; then callbacks; a ticket can wait a second.
    # A worker that starts while a dead one's scheduler lock lives on (61 s) tries again for it
    # only in its maintenance, which runs between waits for jobs: both every minute or so, not
    # RQ's 10 minutes, so scheduled retries and seat jobs are not held up that long.
    # Each job is taken into its queue's intermediate list, so a worker killed holding one loses
    # nothing (callbacks/reliable.py).
    return ReliableWorker(
        [ROUTING_QUEUE, CALLBACKS_QUEUE, TICKETS_QUEUE],
        connection=redis,
        queue_class=ReliableQueue,
        worker_ttl=75,
        maintenance_interval=45,
    )


@hotline.command("resync")
@click.argument("call_sids", nargs=-1, required=True)
def resync_command(call_sids: tuple[str, ...]) -> None:
    """Queue ticket syncs again (after a long database outage)."""
    from ivr.services import services

    for call_sid in call_sids:
        services().request_ticket_sync(call_sid)
    click.echo(f"queued {len(call_sids)} sync(s)")


@hotline.command("call")
@click.option("--keys", default=None, help="Scripted input, e.g. '3,2,1'; '-' is no input. Omit to type.")
@click.option("--from", "caller", default="+819012345678", show_default=True)
@click.option("--to", "called", default="+815012345678", show_default=True)
@click.option("--at", "at", default=None, help="Call at this time, e.g. 2026-11-28T22:00 (the hotline's zone).")
def call_command(keys: str | None, caller: str, called: str, at: str | None) -> None:
    """Dial the hotline locally: hear the prompts, press keys, see the ticket."""
    from ivr.trycall import parse_at, try_call

    # The flask command runs with the app's own environment: a shared Redis.
    ticket, problems = try_call(current_app._get_current_object(), keys, caller, called, parse_at(at), shared=True)
    click.echo(json.dumps(ticket, ensure_ascii=False, indent=2))
    if problems:
        raise SystemExit(1)


@hotline.command("agent-token")
@click.argument("agent_id")
def agent_token_command(agent_id: str) -> None:
    """Print the console sign-in token of an agent (derived from AGENT_TOKEN_SECRET)."""
    from ivr.handlers.agent import agent_token

    secret = current_app.config.get("AGENT_TOKEN_SECRET") or current_app.config.get("OPS_API_TOKEN")
    if not secret:
        raise click.UsageError("set AGENT_TOKEN_SECRET (or OPS_API_TOKEN) first")
    reason = known_agent_or_reason(current_app.config["HOTLINE_CONFIG"], agent_id)
    if reason:
        raise click.UsageError(reason)
    click.echo(agent_token(secret, agent_id))


def known_agent_or_reason(config_path: str, agent_id: str) -> str | None:
    """None when the config at `config_path` has the agent; else why no token is printed. A
    token for a typo would sign nobody in, and the console would only say 'unknown agent'."""
    from ivr.menus.loader import ConfigError, load_config

    try:
        agents = [agent.id for agent in load_config(config_path).agents]
    except ConfigError as exc:
        return f"{config_path}: {exc.summary()}; run the checker on it"
    if agent_id in agents:
        return None
    return f"no agent {agent_id!r} in {config_path} (agents: {', '.join(agents) or 'none'})"
