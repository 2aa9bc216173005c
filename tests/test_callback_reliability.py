"""Callbacks survive the failures that matter (real Redis, real RQ workers; only Twilio's REST
API is faked, at HTTP):

- a work-horse killed with SIGKILL while Twilio is creating the call (after Twilio has it, before
  we recorded its sid): the retried job finds the call in Twilio's list and adopts it, so the
  customer is called exactly once;
- Redis restarted with AOF on (the documented production setting): the callback waiting in line,
  its record, the per-number index and an after-hours callback's scheduled job all come back, and
  each callback is then dialled exactly once.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import responses
import yaml
from rq import Queue, SimpleWorker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from callbacks.dispatcher import dispatch_once
from ivr.localredis import LocalRedis, start_local_redis
from ivr.queues.callbacks import BY_NUMBER, INDEX, Callback, member, record_key
from ivr.queues.state import caller_key, waiting_key
from ivr.services import CALLBACKS_QUEUE
from ivr.settings import ENV_KEYS
from tests.conftest import ACCOUNT_SID, AUTH_TOKEN, BASE_URL, OPEN_TIME, ROOT, SHIPPED_CONFIG

HOTLINE_NUMBER = "+815012345678"
CUSTOMER = "+819012345678"
CALLS_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
CALLS_URL = f"https://api.twilio.com{CALLS_PATH}"
DEADLINE_S = 15.0


def ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


def pending_callback(number: str, when: datetime, call_sid: str, status: str = "pending") -> Callback:
    """A callback as the booking flow makes it (payment queue, English)."""
    return Callback(
        id="",
        status=status,
        number=number,
        call_sid=call_sid,
        lang="en",
        queue="payment",
        node="agent_payment",
        branch="payment",
        arrived_ms=ms(when),
        requested_ms=ms(when),
        updated_ms=ms(when),
    )


# ----- a fake Twilio another process can reach ------------------------------------------------


class FakeTwilio(ThreadingHTTPServer):
    """Twilio's Calls API on a loopback port. A create-call is recorded (the call exists from then
    on) and its request is held open until `release` is set; the call list answers with the calls
    created so far. Anything else, or a wrong account password, is recorded as unexpected."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TwilioHandler)
        self.lock = threading.Lock()
        self.created: list[dict] = []
        self.posts: list[dict[str, list[str]]] = []
        self.lookups: list[dict[str, list[str]]] = []
        self.unexpected: list[str] = []
        self.posted = threading.Event()
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _TwilioHandler(BaseHTTPRequestHandler):
    server: FakeTwilio
    AUTH = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        if urlsplit(self.path).path != CALLS_PATH or self.headers.get("Authorization") != self.AUTH:
            return self._unexpected()
        form = parse_qs(body)
        created = format_datetime(datetime.now(UTC), usegmt=True)
        call = {"sid": "CA" + uuid.uuid4().hex, "to": form["To"][0], "from": form["From"][0], "status": "queued"}
        call |= {"date_created": created, "direction": "outbound-api", "account_sid": ACCOUNT_SID}
        with self.server.lock:
            self.server.posts.append(form)
            self.server.created.append(call)
        self.server.posted.set()
        self.server.release.wait(timeout=30)  # Twilio has placed the call; the answer is late
        self._json(201, call)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        parts = urlsplit(self.path)
        if parts.path != CALLS_PATH or self.headers.get("Authorization") != self.AUTH:
            return self._unexpected()
        query = parse_qs(parts.query)
        with self.server.lock:
            self.server.lookups.append(query)
            calls = [
                c
                for c in self.server.created
                if c["to"] in query.get("To", [c["to"]]) and c["from"] in query.get("From", [c["from"]])
            ]
        self._json(
            200,
            {
                "calls": calls,
                "first_page_uri": f"{self.path}&Page=0",
                "next_page_uri": None,
                "previous_page_uri": None,
                "page": 0,
                "page_size": 50,
                "start": 0,
                "end": max(len(calls) - 1, 0),
                "uri": self.path,
            },
        )

    def _unexpected(self) -> None:
        with self.server.lock:
            self.server.unexpected.append(f"{self.command} {self.path}")
        self._json(404, {"code": 20404, "message": "not faked", "status": 404})

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client died while we held its request: that is the point


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    server = FakeTwilio()
    thread = threading.Thread(target=server.serve_forever, name="fake-twilio", daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# ----- processes ----------------------------------------------------------------------------


def proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]; None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def work_horse_of(worker_pid: int) -> int | None:
    """The worker's forked work-horse: its child that leads its own process group (RQ's horse
    calls setpgrp; the scheduler process, the other child, stays in the worker's group)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = proc_stat(int(entry.name))
        if stat and stat[0] != "Z" and int(stat[1]) == worker_pid and int(stat[2]) == int(entry.name):
            return int(entry.name)
    return None


def gone(pid: int) -> bool:
    stat = proc_stat(pid)
    return stat is None or stat[0] in ("Z", "X")


def wait_for(what: str, check: Callable[[], object], worker: subprocess.Popen, log: Path) -> object:
    """Poll `check` until it returns something truthy; fail at the deadline or if the worker died."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        found = check()
        if found:
            return found
        if worker.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"{what}: not seen (worker exit code {worker.poll()})\n--- worker log ---\n{tail}")
        time.sleep(0.05)


def stop_worker(worker: subprocess.Popen) -> None:
    """Warm shutdown (SIGTERM: the worker stops its scheduler); its process group if it hangs."""
    if worker.poll() is None:
        worker.terminate()
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)  # its own session: only the worker and its children
            worker.wait(timeout=5)


def open_all_week(tmp_path: Path) -> Path:
    """The shipped config with the line open around the clock (the worker runs on real time)."""
    config = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    hours = config["hours"]
    hours["weekly"] = {day: ["00:00-24:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    hours.update(public_holidays=None, closed_dates=[], special_hours={})
    path = tmp_path / "hotline.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def own_redis() -> Iterator[LocalRedis]:
    server = start_local_redis()
    yield server
    server.stop()


# ----- a worker killed in the middle of the dial --------------------------------------------


def test_a_work_horse_killed_mid_dial_still_calls_back_exactly_once(
    make_app, database_url, tmp_path, fake_twilio, own_redis
):
    config = open_all_week(tmp_path)
    app = make_app(
        REDIS_URL=own_redis.url,
        HOTLINE_CONFIG=str(config),
        CLOCK=None,
        TWILIO_CALLER_ID=HOTLINE_NUMBER,
        TWILIO_API_BASE_URL=fake_twilio.url,
    )
    hotline = app.extensions["hotline"]
    now = datetime.now(UTC)
    with app.app_context():
        callback, created = hotline.callbacks.request(pending_callback(CUSTOMER, now, "CA" + "c" * 32))
    assert created and hotline.callbacks.position(callback) == 1
    hotline.routing.set_agent_status("a103", "available", ms(now))

    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env |= {
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_CALLER_ID": HOTLINE_NUMBER,
        "PUBLIC_BASE_URL": BASE_URL,
        "REDIS_URL": own_redis.url,
        "DATABASE_URL": database_url,
        "HOTLINE_CONFIG": str(config),
        "TWILIO_API_BASE_URL": fake_twilio.url,
    }
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "wsgi", "hotline", "worker"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # The dispatcher reserves Emma for the callback; the horse asks Twilio to place the call.
        wait_for("a create-call request", fake_twilio.posted.is_set, worker, log)
        horse = wait_for("the work-horse", lambda: work_horse_of(worker.pid), worker, log)
        attempt = hotline.callbacks.get(callback.id).attempts[0]
        assert attempt["agent"] == "a103" and attempt["dial_started_at"] and "call_sid" not in attempt
        # Twilio has the call; the dialler dies before it hears the sid.
        os.kill(horse, signal.SIGKILL)
        wait_for("the work-horse's death", lambda: gone(horse), worker, log)
        fake_twilio.release.set()

        # RQ sees the horse die and retries the job (1 s later, through the scheduler): the retry
        # looks the call up in Twilio's list and adopts it instead of dialling again.
        def adopted() -> dict | None:
            first = hotline.callbacks.get(callback.id).attempts[0]
            return first if first.get("call_sid") else None

        attempt = wait_for("the call sid in the outbox", adopted, worker, log)
        queue = Queue(CALLBACKS_QUEUE, connection=hotline.redis)

        def settled() -> bool:
            registries = (StartedJobRegistry(queue=queue), ScheduledJobRegistry(queue=queue))
            return queue.count == 0 and not any(r.get_job_ids() for r in registries)

        wait_for("the callbacks queue at rest", settled, worker, log)
        assert not FailedJobRegistry(queue=queue).get_job_ids()
    finally:
        stop_worker(worker)

    [placed] = fake_twilio.created
    assert attempt["call_sid"] == placed["sid"]
    assert len(fake_twilio.posts) == 1, fake_twilio.posts  # exactly one call to the customer
    [form] = fake_twilio.posts
    cb_url = f"{BASE_URL}/voice/callback/{callback.id}/1"
    assert {k: v for k, v in form.items() if k != "StatusCallbackEvent"} == {
        "To": [CUSTOMER],
        "From": [HOTLINE_NUMBER],
        "Url": [f"{cb_url}/answer"],
        "Method": ["POST"],
        "StatusCallback": [f"{cb_url}/status"],
        "StatusCallbackMethod": ["POST"],
        "Timeout": ["30"],
        "MachineDetection": ["Enable"],
    }
    assert form["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    [lookup] = fake_twilio.lookups
    assert lookup["To"] == [CUSTOMER] and lookup["From"] == [HOTLINE_NUMBER]
    assert not fake_twilio.unexpected
    current = hotline.callbacks.get(callback.id)
    assert current.status == "dialling" and current.agent == "a103" and len(current.attempts) == 1
    assert hotline.routing.agents()["a103"][0] == "reserved"  # held for the customer's answer


# ----- Redis restarted ----------------------------------------------------------------------


@pytest.mark.parametrize("restart", ["shutdown", "sigkill"])
def test_a_redis_restart_with_aof_loses_no_pending_callback(make_app, clock, no_unexpected_http, restart):
    """An orderly restart, and a crash of the server (SIGKILL)."""
    server = start_local_redis(appendonly=True)
    try:
        app = make_app(REDIS_URL=server.url, TWILIO_CALLER_ID=HOTLINE_NUMBER, SLEEP=lambda seconds: None)
        hotline = app.extensions["hotline"]
        redis = hotline.redis
        queue = Queue(CALLBACKS_QUEUE, connection=redis)
        line = waiting_key("payment", "en")
        # A waits in line (it arrived 5 minutes ago); B was asked for on Saturday night, when the
        # line was closed, and is scheduled for the next opening (Tuesday 09:00: Monday is a
        # public holiday), an hour before now.
        asked = datetime(2026, 11, 21, 13, 0, tzinfo=UTC)
        opening = hotline.config.current().hours.next_opening(asked)
        assert opening == datetime(2026, 11, 24, 0, 0, tzinfo=UTC) <= clock.now == OPEN_TIME
        waiting_since = clock.now - timedelta(minutes=5)
        with app.app_context():
            a, _ = hotline.callbacks.request(pending_callback(CUSTOMER, waiting_since, "CA" + "a" * 32))
            b = pending_callback("+819087654321", asked, "CA" + "b" * 32, status="scheduled")
            b.scheduled_ms = ms(opening)
            b, _ = hotline.callbacks.request(b)
            hotline.schedule_callback(b, opening)
        [seat_job] = ScheduledJobRegistry(queue=queue).get_job_ids()

        def snapshot() -> dict:
            return {
                "line": redis.zrange(line, 0, -1, withscores=True),
                "seat": redis.hgetall(caller_key(member(a.id))),
                "records": [redis.hgetall(record_key(c.id)) for c in (a, b)],
                "by_number": redis.hgetall(BY_NUMBER),
                "index": redis.zrange(INDEX, 0, -1, withscores=True),
                "scheduled": redis.zrange(ScheduledJobRegistry(queue=queue).key, 0, -1, withscores=True),
                "seat_job": redis.hgetall(f"rq:job:{seat_job}"),
            }

        before = snapshot()
        assert before["line"] == [(member(a.id).encode(), float(a.arrived_ms))]
        run_id = redis.info("server")["run_id"]
        if restart == "shutdown":
            server.restart()
        else:
            server.crash_and_restart()
        assert redis.info("server")["run_id"] != run_id  # a new server, loaded from the AOF
        assert snapshot() == before

        assert redis.zscore(line, member(a.id)) == a.arrived_ms
        assert hotline.callbacks.get(a.id) == a and hotline.callbacks.get(b.id) == b
        assert hotline.callbacks.open_for(CUSTOMER) == a and hotline.callbacks.open_for(b.number) == b
        assert hotline.callbacks.position(a) == 1
        registry = ScheduledJobRegistry(queue=queue)
        assert registry.get_scheduled_time(seat_job) == opening
        assert queue.fetch_job(seat_job).args == (b.id,)

        # B's time has come: run its job as RQ's scheduler would. It goes back into line with its
        # original arrival (ahead of A); two agents free up; each callback is dialled exactly once.
        def answer(request):
            to = parse_qs(request.body)["To"][0]
            return 201, {}, json.dumps({"sid": f"CA{to[1:]:0>32}", "to": to, "status": "queued"})

        no_unexpected_http.add_callback(responses.POST, CALLS_URL, callback=answer)
        with app.app_context():
            registry.remove(seat_job)
            queue.enqueue_job(queue.fetch_job(seat_job))
            SimpleWorker([queue], connection=redis).work(burst=True)
            assert [hotline.callbacks.position(c) for c in (b, a)] == [1, 2]
            for agent in ("a103", "a101"):
                hotline.routing.set_agent_status(agent, "available", ms(clock.now))
            assert dispatch_once()[1] == 2
            SimpleWorker([queue], connection=redis).work(burst=True)
            assert not FailedJobRegistry(queue=queue).get_job_ids()
            assert not registry.get_job_ids() and queue.count == 0
        dials = [parse_qs(c.request.body) for c in no_unexpected_http.calls if c.request.url.startswith(CALLS_URL)]
        assert sorted(d["To"][0] for d in dials) == sorted([CUSTOMER, b.number])
        for c in (a, b):
            current = hotline.callbacks.get(c.id)
            [attempt] = current.attempts
            assert current.status == "dialling" and attempt["call_sid"] == f"CA{c.number[1:]:0>32}"
        assert redis.zcard(line) == 0
    finally:
        server.stop()
