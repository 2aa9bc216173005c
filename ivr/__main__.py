"""python -m ivr run | check [PATH] | call [--keys 3,2,1] [--at 2026-11-28T22:00] | agent-token ID"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535); check PORT")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ivr", description="Hotline, locally.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the hotline locally (Redis, worker, web) and print the URLs")
    run.add_argument("--port", type=_port, default=os.environ.get("PORT", "5000"), help="default: $PORT or 5000")
    check = sub.add_parser("check", help="validate a config file")
    check.add_argument("path", nargs="?", default=os.environ.get("HOTLINE_CONFIG", "config/hotline.yaml"))
    call = sub.add_parser("call", help="dial the hotline in-process and show the ticket")
    call.add_argument("--keys", default=None, help="scripted input, e.g. 3,2,1 ('-' = no input); omit to type")
    call.add_argument("--from", dest="caller", default="+819012345678", help="caller ID (withheld: anonymous)")
    call.add_argument("--to", dest="called", default="+815012345678", help="the number dialled")
    call.add_argument("--at", default=None, help="call at this time, e.g. 2026-11-28T22:00 (the hotline's zone)")
    call.add_argument("--verbose", action="store_true", help="show the app's own log (INFO) between the prompts")
    token = sub.add_parser("agent-token", help="print an agent's console sign-in token")
    token.add_argument("agent_id")
    args = parser.parse_args(argv)

    if args.command == "agent-token":
        from ivr.cli import known_agent_or_reason
        from ivr.handlers.agent import agent_token

        secret = os.environ.get("AGENT_TOKEN_SECRET") or os.environ.get("OPS_API_TOKEN")
        if not secret:
            parser.error("agent-token: export AGENT_TOKEN_SECRET (or OPS_API_TOKEN), as the app has it")
        reason = known_agent_or_reason(os.environ.get("HOTLINE_CONFIG", "config/hotline.yaml"), args.agent_id)
        if reason:
            parser.error(f"agent-token: {reason}")
        print(agent_token(secret, args.agent_id))
        return 0

    if args.command == "check":
        from ivr.cli import check_file

        return check_file(args.path)
    if args.command == "run":
        from ivr.devserver import main as serve

        return serve(args.port)
    import click
    from redis.exceptions import RedisError
    from sqlalchemy.exc import SQLAlchemyError

    from ivr.devserver import app_or_reasons, local_environment
    from ivr.trycall import parse_at, try_call

    try:
        at = parse_at(args.at)
    except click.BadParameter as exc:
        parser.error(f"--at: {exc.message}")
    shared = bool(os.environ.get("REDIS_URL"))  # a Redis of the user's: maybe a running hotline's
    # What the caller hears and the ticket, not migrations and worker chatter; warnings still show.
    # Configured before the app factory, which then only adds its number scrubbing to it.
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # In-process, the call signs with whatever token it has: the development tokens are no
    # business of the person trying a menu (and would not be those of a `make run` beside it).
    with local_environment(private_database=True, announce_tokens=False):
        app = app_or_reasons("no call made")
        if app is None:
            return 2
        try:
            ticket, problems = try_call(
                app, args.keys, args.caller, args.called, at, shared=shared, verbose=args.verbose
            )
        except (RedisError, SQLAlchemyError) as exc:
            # The simulator is a caller: a hotline whose Redis or database is down is news, not a bug.
            which = "Redis" if isinstance(exc, RedisError) else "ticket database"
            print(f"the hotline's {which} did not answer ({type(exc).__name__}: {exc}); no call made", file=sys.stderr)
            return 2
    print(json.dumps(ticket, ensure_ascii=False, indent=2))
    return 1 if problems else 0  # a menu change tried in a pipeline fails it on dead air


if __name__ == "__main__":
    sys.exit(main())
