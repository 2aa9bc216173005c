"""The CLIs: the simulator a newcomer uses to try a menu change (run as a real process), the worker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from ivr.cli import build_worker
from ivr.localredis import free_port
from tests.conftest import ROOT, SHIPPED_CONFIG


def test_python_m_ivr_call_walks_the_menu_and_prints_the_ticket(redis_url, tmp_path):
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "TWILIO_AUTH_TOKEN": "cli-token",
    }
    env.pop("PUBLIC_BASE_URL", None)
    done = _run(["call", "--keys", "3,3,2,-"], env)
    assert done.returncode == 0, done.stderr
    assert "[en-US] You can follow a refund in the app" in done.stdout
    ticket = json.loads(done.stdout[done.stdout.index("\n{") :])
    assert ticket["outcome"] == "self_service"
    assert [step["node"] for step in ticket["path"]] == ["language", "main", "refund", "refund_status"]
    assert "PROBLEM" not in done.stderr
    # A shared Redis holds the call to the real clock: its duration is real too, not the ~40 s
    # of speaking it walked through.
    started, ended = (datetime.fromisoformat(ticket[k]) for k in ("started_at", "ended_at"))
    assert ticket["duration_s"] == max(1, round((ended - started).total_seconds())) < 10


def test_migrations_upgrade_an_empty_database_and_are_repeatable(any_database_url):
    from sqlalchemy import create_engine, inspect

    from ivr.tickets.migrate import upgrade

    upgrade(any_database_url)  # already at head: a no-op
    engine = create_engine(any_database_url)
    assert {"tickets", "ticket_events", "alembic_version"} <= set(inspect(engine).get_table_names())
    engine.dispose()


def test_the_worker_waits_for_jobs_on_a_client_of_its_own(make_app):
    """RQ's blocking wait (minutes) must not run on a connection the app opened with its 2 s
    socket timeout: RQ quits when that wait times out."""
    app = make_app()
    hotline = app.extensions["hotline"]
    hotline.redis.ping()  # the app's client has an open 2 s connection now
    worker = build_worker(app.config["REDIS_URL"])
    pool = worker.connection.connection_pool
    assert pool is not hotline.redis.connection_pool
    assert pool.connection_kwargs["socket_timeout"] > worker.dequeue_timeout
    conn = pool.get_connection()
    try:
        assert conn.socket_timeout > worker.dequeue_timeout  # what the blocking BLMOVE gets
    finally:
        pool.release(conn)
    assert [q.name for q in worker.queues] == ["routing", "callbacks", "tickets"]


def _run(
    args: list[str], env: dict, timeout: float = 60, command: tuple = (), typed: str | None = None
) -> subprocess.CompletedProcess:
    """`python -m ivr <args>` (or `command` + args) from the repository's folder, as a newcomer
    runs it; `typed`: what they type at its prompts (then the end of input, Ctrl-D)."""
    command = command or (sys.executable, "-m", "ivr")
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout, input=typed
    )


def test_the_interactive_simulator_asks_again_after_a_typo_and_hangs_up_on_ctrl_d(redis_url, tmp_path):
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    env.pop("PUBLIC_BASE_URL", None)
    done = _run(["call"], env, typed="3\nfoo\n1\n")  # English, a typo, account; then Ctrl-D
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "Error: keys (0-9, * or #), Enter for no input, say:<words>, or hangup" in done.stdout
    assert "(the caller hangs up)" in done.stdout
    ticket = json.loads(done.stdout[done.stdout.index("\n{") :])
    assert [step["node"] for step in ticket["path"]] == ["language", "main", "account"]
    assert ticket["outcome"] == "hung_up_in_menu"


def test_make_run_refuses_a_port_in_use_and_an_invalid_config_with_the_checkers_words(redis_url, tmp_path):
    import socket

    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}"}
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = _run(["run", "--port", str(port)], env)
    assert done.returncode == 1 and f"port {port} is in use" in done.stderr
    assert "Hotline is running" not in done.stdout

    broken = tmp_path / "hotline.yaml"
    text = (ROOT / "config" / "hotline.yaml").read_text().replace("Asia/Tokyo", "Asia/Nowhere")
    broken.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "Asia/Nowhere" in row)
    done = _run(["run", "--port", str(free_port())], {**env, "HOTLINE_CONFIG": str(broken)})
    assert done.returncode == 2
    assert f"{broken}:{line}: hours.timezone: unknown time zone 'Asia/Nowhere'" in done.stderr
    assert "Traceback" not in done.stderr and "Hotline is running" not in done.stdout


def test_the_simulator_takes_a_time_and_a_private_database_comes_with_its_private_redis(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "PUBLIC_BASE_URL")}
    done = _run(["call", "--keys", "3,2,0", "--at", "2026-11-28T22:00"], env)  # Saturday night in Tokyo
    assert done.returncode == 0, done.stderr
    assert "The line opens on Monday, November 30, at 9 AM" in done.stdout
    assert "instance/hotline.db" not in done.stdout  # not the ticket store `make run` uses
    ticket = json.loads(done.stdout[done.stdout.index("\n{") :])
    assert ticket["outcome"] == "after_hours"
    # The call's own timeline: it starts at --at, its steps and its end follow the time spent.
    assert ticket["started_at"] == "2026-11-28T13:00:00+00:00"
    started, ended = (datetime.fromisoformat(ticket[k]) for k in ("started_at", "ended_at"))
    assert 10 < ticket["duration_s"] == round((ended - started).total_seconds())
    times = [step["at"] for step in ticket["path"]]
    assert times == sorted(times) and times[0] < times[-1]
    assert "--at" in _run(["call", "--at", "tomorrow"], env).stderr
    # What the caller hears and the ticket: no development tokens (nothing to sign or call with
    # them), no migration or worker log lines.
    assert "development token" not in done.stdout
    assert not [line for line in (done.stdout + done.stderr).splitlines() if " INFO " in line]


def test_the_simulator_says_plainly_when_the_hotlines_redis_is_down(tmp_path):
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "DATABASE_URL": f"sqlite:///{tmp_path}/t.db",
    }
    done = _run(["call", "--keys", "3"], env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "the hotline's Redis did not answer (ConnectionError" in done.stderr


def test_make_call_passes_spoken_words_whole(tmp_path):
    """`make call KEYS="3,say:money back"`: the words reach the simulator as one item."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "PUBLIC_BASE_URL")}
    make = ("make", "-s", "-o", "install")
    done = _run(["call", f"PY={sys.executable}", "KEYS=3,say:money back,-"], env, command=make)
    assert done.returncode == 0, done.stderr
    ticket = json.loads(done.stdout[done.stdout.index("\n{") :])
    assert [step["node"] for step in ticket["path"]] == ["language", "main", "refund"]
    assert ticket["path"][1]["inputs"][-1]["input"] == "speech"
    # Words with a quote in them (the Makefile once pasted KEYS between single quotes).
    done = _run(["call", f"PY={sys.executable}", "KEYS=3,say:I can't log in,-"], env, command=make)
    assert done.returncode == 0, done.stderr
    ticket = json.loads(done.stdout[done.stdout.index("\n{") :])
    assert [step["node"] for step in ticket["path"]] == ["language", "main", "account"]


def test_agent_tokens_need_only_the_secret():
    from ivr.handlers.agent import agent_token

    env = {k: v for k, v in os.environ.items() if k not in ("AGENT_TOKEN_SECRET", "OPS_API_TOKEN")}
    done = _run(["agent-token", "a101"], {**env, "AGENT_TOKEN_SECRET": "s3cret"})
    assert done.returncode == 0 and done.stdout.strip() == agent_token("s3cret", "a101")
    assert _run(["agent-token", "a101"], env).returncode == 2
    typo = _run(["agent-token", "a1O1"], {**env, "AGENT_TOKEN_SECRET": "s3cret"})
    assert typo.returncode == 2 and not typo.stdout
    assert "no agent 'a1O1' in config/hotline.yaml (agents: a101, " in typo.stderr


def test_the_flask_cli_refuses_missing_settings_and_a_broken_config_in_one_line(tmp_path):
    """`flask --app wsgi hotline …` as the Procfile's worker and release run it: the reason, not a
    traceback ending in it."""
    flask = (str(Path(sys.executable).with_name("flask")), "--app", "wsgi", "hotline")
    bare = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    unset = _run(["db-upgrade"], bare, command=flask)
    assert unset.returncode == 2 and "Traceback" not in unset.stderr
    assert unset.stderr.startswith("hotline: missing setting(s) TWILIO_AUTH_TOKEN, REDIS_URL")
    broken = tmp_path / "hotline.yaml"
    shipped = SHIPPED_CONFIG.read_text(encoding="utf-8")
    broken.write_text(shipped.replace("timezone: Asia/Tokyo", "timezone: Asia/Tokio"), encoding="utf-8")
    env = {**bare, "TWILIO_AUTH_TOKEN": "t", "REDIS_URL": "redis://127.0.0.1:1/0", "HOTLINE_CONFIG": str(broken)}
    refused = _run(["worker"], env, command=flask)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert f"{broken}:" in refused.stderr and "hours.timezone" in refused.stderr and "Asia/Tokio" in refused.stderr


def _children(pid: int) -> dict[int, str]:
    """Direct children of `pid` and their command lines, from /proc."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_text().replace("\0", " ")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry)] = cmdline
    return found


def _until(what, timeout_s: float = 30):  # noqa: ANN001
    """Poll (a real process is on the other side) until `what()` is truthy."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_make_run_starts_a_killed_worker_again_and_keeps_its_redis(redis_url, tmp_path):
    """A worker killed with SIGKILL under `make run`: started again; the web app and the Redis
    (with the callbacks in it) stay."""
    import signal
    import urllib.request

    import redis as redis_lib

    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}"}
    env.pop("PUBLIC_BASE_URL", None)
    log = open(tmp_path / "run.log", "w+")  # noqa: SIM115, PTH123
    run = subprocess.Popen(
        [sys.executable, "-m", "ivr", "run", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:

        def worker() -> int | None:
            return next((p for p, cmd in _children(run.pid).items() if "hotline worker" in cmd), None)

        _until(lambda: "Hotline is running" in (tmp_path / "run.log").read_text())
        first = _until(worker)
        redis_lib.Redis.from_url(redis_url).set("kept", "1")
        os.kill(first, signal.SIGKILL)
        _until(lambda: "the worker was started again" in (tmp_path / "run.log").read_text())
        second = _until(worker)
        assert second != first and run.poll() is None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as health:  # noqa: S310
            assert health.status == 200
        assert redis_lib.Redis.from_url(redis_url).get("kept") == b"1"
    finally:
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=30) == 0
        log.close()


def test_make_run_stops_in_order_when_told_to_stop_again_and_again(tmp_path):
    """`kill -- -<make's group>` reaches `ivr run` twice (make passes its SIGTERM on): a second
    signal must not cut the shutdown short and stop the private Redis under a worker that is
    still stopping — that logged a traceback a second until the worker was gone."""
    import signal

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "PUBLIC_BASE_URL")}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path / 'run.db'}"
    env["HOTLINE_CONFIG"] = str(tmp_path / "live.yaml")  # a config of ops' own
    shutil.copy(ROOT / "config" / "hotline.yaml", tmp_path / "live.yaml")
    log = open(tmp_path / "run.log", "w+")  # noqa: SIM115, PTH123
    run = subprocess.Popen(
        [sys.executable, "-m", "ivr", "run", "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:
        _until(lambda: "Hotline is running" in (tmp_path / "run.log").read_text())
        children = _until(lambda: len(found := _children(run.pid)) >= 3 and found)  # Redis, worker, web
        while run.poll() is None:
            run.send_signal(signal.SIGTERM)
            try:
                run.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        assert run.returncode == 0
    finally:
        if run.poll() is None:
            run.kill()
        log.close()
    text = (tmp_path / "run.log").read_text()
    # The line to try a call into this hotline names the config it runs.
    assert f"DATABASE_URL={env['DATABASE_URL']} HOTLINE_CONFIG={env['HOTLINE_CONFIG']} " in text
    assert "Traceback" not in text and "Redis unreachable" not in text and "Error 111" not in text, text[-3000:]
    assert [pid for pid in children if Path(f"/proc/{pid}").exists()] == []
