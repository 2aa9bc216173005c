"""10,000 callbacks due in the same minute, dialled by the real workers (issue 4).

Everything runs on this machine: a throwaway redis-server (AOF on, as in production), a migrated
SQLite ticket database, a copy of `config/hotline.yaml` open around the clock with
`callbacks.agent_gate: false`, and a fake Twilio (a threaded HTTP server in this process) that
answers `POST /2010-04-01/Accounts/<sid>/Calls.json` with 201 and a call, and notes when each
request arrived.

1. Enqueue: N callbacks with distinct numbers are booked through `CallbackBook.request`
   (status "scheduled") and each is scheduled with `callbacks.dialer.schedule_seat` (RQ
   `enqueue_at`) for the same due time, a whole second a little ahead. Timed.
2. Burst: W worker processes, `flask --app wsgi hotline worker` exactly as the Procfile runs them
   (RQ worker with its scheduler, queues routing, callbacks, then tickets, the dispatcher thread), are
   started before the due time with `callbacks.calls_per_second: 0` (pacing off). Measured at the
   fake: from the due time to the first dial, to 50 %, 99 % and the last. Checked: exactly N
   dials, one per number, every callback's outbox holds the sid the fake returned, no failed RQ
   job. A probe job put on the routing queue when half the dials are done shows how long a live
   caller's agent connection (its own queue, listened to first) waits while they run.
3. Pacing: the same with pacing on, at the configured rate (`calls_per_second` of the shipped
   config) and optionally faster, for a few dozen dials: the spacing between successive dial
   requests at the fake (mean, min, 1st percentile) across all workers, and the time N dials
   would take at that spacing (10,000 dials).

    .venv/bin/python bench/callbacks.py                      # N = 10,000, W = 4; pacing 30 at 1/s, 100 at 10/s
    .venv/bin/python bench/callbacks.py --callbacks 1000 --workers 1,4,8 --pace none   # one burst per W
    .venv/bin/python bench/callbacks.py --smoke              # CI: 200 callbacks, 2 workers, 10 dials at 20/s

Exit status: 0 all checks passed; 1 a check failed (missing, duplicate or extra dials, failed
jobs, an outbox without its sid); 3 setup failed (workers did not start, the due time was missed).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rq import Queue, Worker  # noqa: E402
from rq.job import Job  # noqa: E402
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry  # noqa: E402

from callbacks.dialer import PACE_KEY, schedule_seat  # noqa: E402
from ivr import create_app  # noqa: E402
from ivr.calllog import make_event  # noqa: E402
from ivr.localredis import free_port, start_local_redis  # noqa: E402
from ivr.menus.loader import load_config  # noqa: E402
from ivr.phone import callback_number  # noqa: E402
from ivr.queues.callbacks import Callback, record_key  # noqa: E402
from ivr.services import CALLBACKS_QUEUE, ROUTING_QUEUE, TICKETS_QUEUE  # noqa: E402
from ivr.tickets.migrate import upgrade  # noqa: E402

TOKEN = "bench-token"
ACCOUNT_SID = "AC" + "b" * 32
CALLER_ID = "+815012345678"
BASE = "https://hotline.bench"
RESULTS_DIR = ROOT / "bench" / "results"


# ----- the fake Twilio ---------------------------------------------------------------------------


class FakeTwilio:
    """Answers create-call like Twilio (201, a queued call) and records every request's arrival."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.dials: list[tuple[float, str, str]] = []  # (arrival, To, the sid we answered with)
        self.lookups = 0  # GET Calls.json: a retried dial asking whether an earlier run placed it
        # POST Calls/<sid>.json (status=canceled): the sweep stopping a call of ours whose webhooks
        # never came — here none ever do, so a burst longer than the ringing window has some.
        self.cancels = 0
        self.other: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                arrived = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                if not self.path.endswith("/Calls.json"):
                    cancel = "/Calls/CA" in self.path and form.get("Status") == ["canceled"]
                    with fake.lock:
                        if cancel:
                            fake.cancels += 1
                        else:
                            fake.other.append(f"POST {self.path}")
                    if cancel:
                        self._answer(200, {"sid": self.path.rsplit("/", 1)[-1][:-5], "status": "canceled"})
                    else:
                        self._answer(404, {"code": 20404, "message": "not found", "status": 404})
                    return
                to = form.get("To", [""])[0]
                sid = "CA" + uuid.uuid4().hex
                with fake.lock:
                    fake.dials.append((arrived, to, sid))
                self._answer(
                    201,
                    {
                        "sid": sid,
                        "account_sid": ACCOUNT_SID,
                        "to": to,
                        "from": form.get("From", [""])[0],
                        "status": "queued",
                        "direction": "outbound-api",
                        "api_version": "2010-04-01",
                        "date_created": formatdate(arrived, usegmt=True),
                        "date_updated": formatdate(arrived, usegmt=True),
                        "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls/{sid}.json",
                    },
                )

            def do_GET(self) -> None:  # noqa: N802
                with fake.lock:
                    if "/Calls.json" in self.path:
                        fake.lookups += 1
                    else:
                        fake.other.append(f"GET {self.path}")
                self._answer(200, {"calls": [], "next_page_uri": None, "page": 0, "page_size": 20})

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-twilio", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def count(self) -> int:
        with self.lock:
            return len(self.dials)

    def reset(self) -> None:
        with self.lock:
            self.dials, self.lookups, self.cancels, self.other = [], 0, 0, []

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ----- setup -------------------------------------------------------------------------------------


def write_config(directory: Path, calls_per_second: float) -> Path:
    """The shipped config, open around the clock, no agent gate, pacing as given."""
    data = yaml.safe_load((ROOT / "config" / "hotline.yaml").read_text(encoding="utf-8"))
    data["hours"]["weekly"] = {day: ["00:00-24:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    data["hours"]["public_holidays"] = None
    data["hours"]["closed_dates"] = []
    data["hours"]["special_hours"] = {}
    data["callbacks"]["agent_gate"] = False
    data["callbacks"]["calls_per_second"] = calls_per_second
    # The fake Twilio sends no webhooks, which real calls would within their ringing window; the
    # longest windows (390 s) keep the dispatcher's sweep for dials that never report back (it
    # would stop and settle the first ones while the burst is still being dialled) out of the run.
    data["routing"].update(ring_timeout_s=60, accept_timeout_s=60)
    data["callbacks"]["ring_timeout_s"] = 120
    path = directory / f"hotline-cps{calls_per_second:g}.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    load_config(path)  # refuses an invalid copy here rather than in the workers
    return path


def shipped_rate() -> float:
    return float(load_config(ROOT / "config" / "hotline.yaml").callbacks.calls_per_second)


def numbers(n: int) -> list[str]:
    """N distinct Japanese mobile numbers, +8190 and eight digits, each one we may call back."""
    found = [f"+8190{10_000_000 + k:08d}" for k in range(n)]
    bad = [x for x in found if callback_number(x, "JP") != x]
    if bad:
        raise SystemExit(f"not callable: {bad[:3]}")
    return found


class Workers:
    """W `flask --app wsgi hotline worker` processes, each in its own session (its work horses and
    scheduler process included), stopped by their ids."""

    def __init__(self, count: int, env: dict[str, str], logs: Path):
        self.procs: list[subprocess.Popen] = []
        self.logs = logs
        for k in range(count):
            with open(logs / f"worker-{k}.log", "wb") as out:
                self.procs.append(
                    subprocess.Popen(
                        [str(ROOT / ".venv" / "bin" / "python"), "-m", "flask", "--app", "wsgi", "hotline", "worker"],
                        cwd=ROOT,
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )

    def wait_ready(self, redis, timeout_s: float = 60.0) -> float:  # noqa: ANN001
        """Seconds until every worker is registered and one holds the callbacks queue's scheduler."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a worker exited ({dead[0].returncode}): {self.tail()}")
            if len(Worker.all(connection=redis)) >= len(self.procs) and redis.exists(
                f"rq:scheduler-lock:{CALLBACKS_QUEUE}"
            ):
                return time.monotonic() - start
            time.sleep(0.1)
        raise RuntimeError(f"workers not ready after {timeout_s:.0f} s: {self.tail()}")

    def tail(self, n: int = 1500) -> str:
        text = "".join((self.logs / f"worker-{k}.log").read_text(errors="replace") for k in range(len(self.procs)))
        return text[-n:]

    def errors(self) -> list[str]:
        found = []
        for k in range(len(self.procs)):
            for line in (self.logs / f"worker-{k}.log").read_text(errors="replace").splitlines():
                if "Traceback" in line or " ERROR " in line or "Error:" in line:
                    found.append(f"worker-{k}: {line.strip()}")
        return found

    def count(self, text: str) -> int:
        return sum(
            (self.logs / f"worker-{k}.log").read_text(errors="replace").count(text) for k in range(len(self.procs))
        )

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)  # warm shutdown: finishes its job, stops its scheduler
        deadline = time.monotonic() + 15
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the session we created for it: horse, scheduler
            except ProcessLookupError:
                pass
            p.wait()


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


# ----- one run -----------------------------------------------------------------------------------


@dataclass
class Run:
    kind: str  # burst | pacing
    callbacks: int
    workers: int
    calls_per_second: float
    enqueue_s: float = 0.0
    lead_s: float = 0.0
    ready_s: float = 0.0
    dials: int = 0
    distinct: int = 0
    lookups: int = 0
    cancels: int = 0  # calls the lost-dial sweep stopped (the fake sends no webhooks)
    first_s: float = math.nan  # from the due time
    p50_s: float = math.nan
    p99_s: float = math.nan
    last_s: float = math.nan
    scheduler_done_s: float = math.nan  # the due jobs had all left RQ's scheduled registry
    probe_wait_s: float = math.nan  # a routing job queued at half the dials: queued -> started
    cpu_busy: float = math.nan  # the machine, due -> last dial
    tickets_backlog: int = 0  # ticket syncs still queued at the last dial
    swept: int = 0  # callbacks the dispatcher seated because their seat job was overdue
    gaps_ms: dict[str, float] = field(default_factory=dict)
    projected_s: float = math.nan
    failed_jobs: int = 0
    outbox_missing: int = 0
    problems: list[str] = field(default_factory=list)
    timeline: list[tuple[float, int, int, int]] = field(default_factory=list)  # t, scheduled, queued, dials


def book_and_schedule(app, n: int, due: datetime) -> float:  # noqa: ANN001
    """Phase 1: N callbacks booked and scheduled for `due`; returns the seconds it took."""
    hotline = app.extensions["hotline"]
    book, queue = hotline.callbacks, hotline.callbacks_queue
    due_ms = int(due.timestamp() * 1000)
    todo = numbers(n)
    # Not timed: the calls that asked for the callbacks (their start event and ticket reference,
    # as `/voice/incoming` records them), so the callbacks' ticket syncs find a real call.
    started = datetime.now(UTC)
    references = [
        hotline.calls.start(
            f"CA{k:032x}", make_event("call", started, event_id="start", caller=number, called=CALLER_ID)
        )
        for k, number in enumerate(todo)
    ]
    start = time.perf_counter()
    now_ms = int(time.time() * 1000)
    for k, number in enumerate(todo):
        callback, created = book.request(
            Callback(
                id="",
                status="scheduled",
                number=number,
                call_sid=f"CA{k:032x}",
                lang="en",
                queue="payment",
                node="agent_payment",
                branch="payment",
                arrived_ms=now_ms - 60_000,
                requested_ms=now_ms,
                scheduled_ms=due_ms,
                reference=references[k],
            )
        )
        assert created, number
        schedule_seat(queue, callback, due)
    return time.perf_counter() - start


def run_once(
    kind: str, n: int, workers: int, cps: float, tmp: Path, redis_url: str, fake: FakeTwilio, lead_s: float
) -> Run:
    from redis import Redis

    run = Run(kind, n, workers, cps)
    redis = Redis.from_url(redis_url)
    redis.flushall()
    fake.reset()
    directory = Path(tempfile.mkdtemp(prefix=f"{kind}-w{workers}-", dir=tmp))
    db = f"sqlite:///{directory}/hotline.db"
    upgrade(db)
    # WAL now, once (it persists in the file): W workers opening a fresh file at the same moment
    # each switch it to WAL on connect, and SQLite refuses one of them ("database is locked").
    conn = sqlite3.connect(directory / "hotline.db")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    config = write_config(directory, cps)
    settings = {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_CALLER_ID": CALLER_ID,
        "PUBLIC_BASE_URL": BASE,
        "REDIS_URL": redis_url,
        "DATABASE_URL": db,
        "HOTLINE_CONFIG": str(config),
        "TWILIO_API_BASE_URL": fake.url,
    }
    app = create_app({**settings, "CONFIG_RELOAD_INTERVAL_S": 0})
    # A whole second: RQ's scheduled registry scores are whole seconds (a due time of x.7 would
    # be moved at x.0, early).
    due_ts = math.ceil(time.time() + lead_s)
    due = datetime.fromtimestamp(due_ts, UTC)
    run.lead_s = due_ts - time.time()
    with app.app_context():
        run.enqueue_s = book_and_schedule(app, n, due)
    env = {k: v for k, v in os.environ.items() if k not in settings and not k.startswith(("FLASK_", "RQ_"))}
    env.update(settings)
    env["PYTHONUNBUFFERED"] = "1"
    pool = Workers(workers, env, directory)
    try:
        run.ready_s = pool.wait_ready(redis)
        margin = due_ts - time.time()
        if margin < 1.0:
            raise RuntimeError(
                f"enqueue ({run.enqueue_s:.1f} s) and worker start ({run.ready_s:.1f} s) ran past the due time: "
                "raise --lead"
            )
        measure(run, redis, fake, due_ts, n)
    finally:
        pool.stop()
        run.problems += pool.errors()[:10]
        # The dispatcher's safety net seating callbacks whose seat job looks lost (overdue).
        run.swept = pool.count("scheduled seat job is lost")
        app.extensions["hotline"].close()
        redis.close()
    return run


def measure(run: Run, redis, fake: FakeTwilio, due_ts: float, n: int) -> None:  # noqa: ANN001
    routing = Queue(ROUTING_QUEUE, connection=redis)
    callbacks = Queue(CALLBACKS_QUEUE, connection=redis)
    tickets = Queue(TICKETS_QUEUE, connection=redis)
    scheduled = ScheduledJobRegistry(CALLBACKS_QUEUE, connection=redis)
    started = StartedJobRegistry(CALLBACKS_QUEUE, connection=redis)
    # A quiet budget: the burst must end long before this (pacing: its own length, doubled).
    budget = 30 + (n / run.calls_per_second * 2 if run.calls_per_second else n * 0.2)
    while time.time() < due_ts:
        time.sleep(0.01)
    cpu0 = cpu_busy()
    probe = None
    last_sample = 0.0
    while True:
        now = time.time()
        t = now - due_ts
        # The probe: a live caller's agent connection (a routing job), queued when half the dials
        # are done, so it waits behind the other half.
        if probe is None and fake.count() >= n / 2:
            probe = routing.enqueue("time.time", result_ttl=600)
        if now - last_sample >= 0.5:
            last_sample = now
            run.timeline.append((round(t, 2), scheduled.count, callbacks.count, fake.count()))
            if math.isnan(run.scheduler_done_s) and run.timeline[-1][1] == 0:
                run.scheduler_done_s = t
        count = fake.count()
        # Done when every callback was dialled and nothing is left to run now: a retry's seat job
        # (10 minutes on, for an attempt the lost-dial sweep settled) is not this burst's work.
        first = scheduled.get_job_ids(0, 0, cleanup=False) if scheduled.count else []
        due_now = bool(first) and scheduled.get_scheduled_time(first[0]).timestamp() <= now + 5
        if count >= n and callbacks.count == 0 and started.count == 0 and not due_now:
            break
        if t > budget:
            run.problems.append(f"gave up after {budget:.0f} s with {count} of {n} dials")
            break
        time.sleep(0.05)
    cpu1 = cpu_busy()
    run.tickets_backlog = tickets.count
    time.sleep(1.0)  # anything late (a duplicate) arrives now
    with fake.lock:
        dials = sorted(fake.dials)
        run.lookups = fake.lookups
        run.cancels = fake.cancels
        run.problems += fake.other[:5]
    times = [d[0] - due_ts for d in dials]
    run.dials, run.distinct = len(dials), len({d[1] for d in dials})
    if times:
        run.first_s, run.last_s = times[0], times[-1]
        run.p50_s, run.p99_s = percentile(times, 0.5), percentile(times, 0.99)
    if cpu1[1] > cpu0[1]:
        run.cpu_busy = (cpu1[0] - cpu0[0]) / (cpu1[1] - cpu0[1])
    if probe is not None:
        job = Job.fetch(probe.id, connection=redis)
        if job.started_at and job.enqueued_at:
            run.probe_wait_s = (job.started_at - job.enqueued_at).total_seconds()
    queues = (ROUTING_QUEUE, CALLBACKS_QUEUE, TICKETS_QUEUE)
    run.failed_jobs = sum(FailedJobRegistry(q, connection=redis).count for q in queues)
    # The outbox: every callback dialling, its attempt holding the sid the fake answered with.
    sids = {d[2] for d in dials}
    pipe = redis.pipeline(transaction=False)
    for k in range(1, n + 1):
        pipe.hget(record_key(str(k)), "attempts")
    for raw in pipe.execute():
        attempts = json.loads(raw or b"[]")
        if not attempts or attempts[-1].get("call_sid") not in sids:
            run.outbox_missing += 1
    if run.calls_per_second and len(times) > 1:
        gaps = [(b - a) * 1000 for a, b in zip(times, times[1:], strict=False)]
        run.gaps_ms = {
            "target": 1000 / run.calls_per_second,
            "mean": statistics.fmean(gaps),
            "min": min(gaps),
            "p1": percentile(gaps, 0.01),
            "max": max(gaps),
            "max_in_1s": max_in_window(times, 1.0),
        }
        run.projected_s = 9_999 * statistics.fmean(gaps) / 1000  # 10,000 dials at the measured spacing
    counts = Counter(d[1] for d in dials)
    duplicates = [x for x, c in counts.items() if c > 1]
    if duplicates:
        run.problems.append(f"{len(duplicates)} numbers dialled more than once")
    if run.dials != n:
        run.problems.append(f"{run.dials} dials for {n} callbacks")
    if run.failed_jobs:
        run.problems.append(f"{run.failed_jobs} failed RQ jobs")
    if run.outbox_missing:
        run.problems.append(f"{run.outbox_missing} callbacks without the dialled call's sid")
    if redis.exists(PACE_KEY) and not run.calls_per_second:
        run.problems.append("pacing key set with pacing off")


def max_in_window(times: list[float], window: float) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# ----- report ------------------------------------------------------------------------------------


def fmt(x: float, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def print_bursts(runs: list[Run]) -> None:
    print()
    print("burst: due time -> dial requests at the fake Twilio (agent gate off, pacing off)")
    head = (
        f"{'callbacks':>9} {'W':>2} {'enqueue s':>9} {'cb/s':>7} {'first s':>7} {'50% s':>6} {'99% s':>6} "
        f"{'last s':>7} {'dials/s':>7} {'sched s':>7} {'probe s':>7} {'cpu':>4} {'dials':>6} {'dup':>3} "
        f"{'failed':>6} {'tickets':>7} {'swept':>5}"
    )
    print(head)
    for r in runs:
        span = r.last_s - r.first_s
        print(
            f"{r.callbacks:>9,} {r.workers:>2} {r.enqueue_s:>9.2f} {r.callbacks / r.enqueue_s:>7.0f} "
            f"{fmt(r.first_s):>7} {fmt(r.p50_s, 1):>6} {fmt(r.p99_s, 1):>6} {fmt(r.last_s, 1):>7} "
            f"{fmt(r.dials / span if span > 0 else math.nan, 0):>7} {fmt(r.scheduler_done_s, 1):>7} "
            f"{fmt(r.probe_wait_s, 1):>7} {fmt(r.cpu_busy * 100, 0):>3}% {r.dials:>6} "
            f"{r.dials - r.distinct:>3} {r.failed_jobs:>6} {r.tickets_backlog:>7} {r.swept:>5}"
        )
    print(
        "  first/50%/99%/last: seconds from the due time to that dial request; sched: when RQ's scheduler had\n"
        "  moved every due job to the queue; probe: wait of a routing job (a live caller's agent connection)\n"
        "  queued when half the dials were done; cpu: whole machine busy, due -> last dial; tickets: ticket\n"
        "  syncs still queued at the last dial (they run after the routing queue); swept: callbacks the\n"
        "  dispatcher seated itself because their seat job was lost"
    )
    for r in runs:
        if r.cancels:
            print(
                f"  {r.callbacks:,} x {r.workers}: the lost-dial sweep stopped {r.cancels:,} calls whose webhooks never"
                " came (the fake sends none; real calls report within their ringing window)"
            )


def print_pacing(runs: list[Run]) -> None:
    print()
    print("pacing: spacing of successive dial requests at the fake Twilio, all workers together")
    print(
        f"{'dials':>5} {'W':>2} {'rate/s':>6} {'target ms':>9} {'mean ms':>8} {'min ms':>7} {'p1 ms':>7} "
        f"{'max ms':>7} {'max/1s':>6} {'probe s':>7} {'10,000 dials':>12}"
    )
    for r in runs:
        g = r.gaps_ms
        print(
            f"{r.callbacks:>5} {r.workers:>2} {r.calls_per_second:>6g} {fmt(g.get('target', math.nan), 0):>9} "
            f"{fmt(g.get('mean', math.nan), 1):>8} {fmt(g.get('min', math.nan), 1):>7} "
            f"{fmt(g.get('p1', math.nan), 1):>7} {fmt(g.get('max', math.nan), 1):>7} "
            f"{g.get('max_in_1s', 0):>6} {fmt(r.probe_wait_s, 1):>7} {r.projected_s / 3600:>10.2f} h"
        )
    print(
        "  max/1s: most dial requests in any 1-second window; probe: as above, queued behind the paced dials;\n"
        "  10,000 dials: 9,999 gaps of the measured mean"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="200 callbacks, 2 workers, 10 paced dials at 20/s")
    parser.add_argument("--callbacks", type=int, default=10_000)
    parser.add_argument("--workers", default="4", help="worker counts, one burst each: 4 or 1,4,8")
    parser.add_argument(
        "--pace",
        action="append",
        help="RATE:DIALS, repeatable; none: no pacing (default: the shipped rate, 30 dials; 10/s, 100 dials)",
    )
    parser.add_argument("--pace-workers", type=int, default=4)
    parser.add_argument("--lead", type=float, help="seconds from the start of the enqueue to the due time")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/callbacks-*.json")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the workers' logs")
    args = parser.parse_args(argv)
    if args.smoke:
        n, counts, paces, pace_workers = 200, [2], [(20.0, 10)], 2
    else:
        n, counts, pace_workers = args.callbacks, [int(x) for x in args.workers.split(",")], args.pace_workers
        paces = [(float(p.split(":")[0]), int(p.split(":")[1])) for p in args.pace or [] if p != "none"]
        if not args.pace:
            paces = [(shipped_rate(), 30), (10.0, 100)]
    started = time.monotonic()
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the migrations of each run's database
    server = start_local_redis(appendonly=True)
    fake = FakeTwilio()
    tmp = Path(tempfile.mkdtemp(prefix="hotline-callbacks-"))
    runs: list[Run] = []
    try:
        print(
            f"callbacks: redis-server (AOF) on {server.url}, fake Twilio on {fake.url}, "
            f"{os.cpu_count()} cores; workers: flask --app wsgi hotline worker"
        )
        for w in counts:
            lead = args.lead or (8 + n * 0.003)  # the calls, the enqueue (~1 ms a callback here), worker start
            print(f"burst: {n:,} callbacks, {w} worker(s), due {lead:.0f} s after the enqueue starts ...", flush=True)
            runs.append(run_once("burst", n, w, 0.0, tmp, server.url, fake, lead))
            r = runs[-1]
            print(
                f"  enqueue {r.enqueue_s:.2f} s, workers ready in {r.ready_s:.1f} s, last dial "
                f"{fmt(r.last_s, 1)} s after due, {r.dials} dials"
                + (f"; PROBLEMS: {r.problems}" if r.problems else ""),
                flush=True,
            )
        for rate, dials in paces:
            print(f"pacing: {dials} callbacks at {rate:g}/s, {pace_workers} workers ...", flush=True)
            runs.append(run_once("pacing", dials, pace_workers, rate, tmp, server.url, fake, 8))
            r = runs[-1]
            print(
                f"  last dial {fmt(r.last_s, 1)} s after due, {r.dials} dials"
                + (f"; PROBLEMS: {r.problems}" if r.problems else ""),
                flush=True,
            )
    except RuntimeError as exc:
        print(f"setup failed: {exc}", file=sys.stderr)
        return 3
    finally:
        fake.stop()
        server.stop()
        if args.keep_logs:
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_bursts([r for r in runs if r.kind == "burst"])
    print_pacing([r for r in runs if r.kind == "pacing"])
    problems = [f"{r.kind} W={r.workers} n={r.callbacks}: {p}" for r in runs for p in r.problems]
    elapsed = time.monotonic() - started
    print()
    print(f"checks: {'all passed' if not problems else 'FAILED'} ({elapsed:.0f} s in all)")
    for p in problems:
        print(f"  {p}")
    if not args.no_save and not args.smoke:
        RESULTS_DIR.mkdir(exist_ok=True)
        out = RESULTS_DIR / f"callbacks-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
        out.write_text(json.dumps([asdict(r) for r in runs], indent=1))
        print(f"saved {out.relative_to(ROOT)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
