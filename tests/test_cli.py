"""The simulator CLI a newcomer uses to try a menu change, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT


def test_python_m_ivr_call_walks_the_menu_and_prints_the_ticket(redis_url, tmp_path):
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "TWILIO_AUTH_TOKEN": "cli-token",
    }
    env.pop("PUBLIC_BASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "ivr", "call", "--keys", "3,3,2,-"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "[en-US] You can follow a refund in the app" in done.stdout
    ticket = json.loads(done.stdout[done.stdout.index("\n{") :])
    assert ticket["outcome"] == "self_service"
    assert [step["node"] for step in ticket["path"]] == ["language", "main", "refund", "refund_status"]
    assert "PROBLEM" not in done.stderr


def test_migrations_upgrade_an_empty_database_and_are_repeatable(any_database_url):
    from sqlalchemy import create_engine, inspect

    from ivr.tickets.migrate import upgrade

    upgrade(any_database_url)  # already at head: a no-op
    engine = create_engine(any_database_url)
    assert {"tickets", "ticket_events", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()
