"""Webhook throughput and latency of the hotline under gunicorn, against a bare Flask baseline.

Replays signed, Twilio-shaped webhook traffic (whole simulated calls: incoming, language,
main-menu choice, branch choice, sometimes a no-input fall-through, the final status callback)
over keep-alive connections on loopback, against

  hotline  `wsgi:app`, as `gunicorn -c gunicorn.conf.py` serves it (its own throwaway Redis,
           a temporary SQLite database; no RQ worker runs, so status callbacks only enqueue)
  bare     `bench.bare_app:app`: one catch-all POST route that parses the form and returns a
           fixed TwiML string, served by gunicorn with the very same settings

in the same run, interleaved (hotline, bare, then bare, hotline, ...), and reports the median
of the runs: requests/s, p50 / p99 / p99.9 latency and errors, plus the throughput ratio
hotline / bare, checked against the targets (ratio >= 50 %, hotline p99 <= 25 ms).

Every request is verified once against both servers before anything is measured (status, and
for the hotline the TwiML says what the call should hear); any failure stops the run loudly.

Load generator: `wrk` (cheap on CPU) when it is on PATH, else a built-in asyncio generator
(Python, so it takes more of the machine's CPU from the servers: its figures are lower and not
comparable with wrk's). The output says which was used.

    .venv/bin/python bench/webhooks.py                   # 3 x 15 s per target, 16 connections
    .venv/bin/python bench/webhooks.py --smoke           # ~10 s sanity run for CI; exit 0 = no errors
    .venv/bin/python bench/webhooks.py --loadgen python  # force the Python generator

Exit status: 0 all good; 1 a request failed under load (HTTP error, socket error, or an error the
app logged); 2 the run worked but a target was missed (not checked with --smoke); 3 setup or
verification failed (a server did not start, a pre-built request was answered wrongly, wrk
missing when asked for, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import http.client
import json
import math
import os
import platform
import random
import re
import runpy
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = ROOT / "gunicorn.conf.py"
HOTLINE_CONFIG = ROOT / "config" / "hotline.yaml"
RESULTS_DIR = ROOT / "bench" / "results"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TARGET_RATIO = 0.50
TARGET_P99_MS = 25.0
# Cores other processes may use during a run before its pair is repeated (see main).
NOISE_CORES = 0.15

AUTH_TOKEN = "bench-auth-token-0123456789abcdef"
BARE_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Say>Hello</Say></Response>'
FORM_TYPE = "application/x-www-form-urlencoded"
USER_AGENT = "TwilioProxy/1.1"

# The traffic mix. Language: share of callers. Branch: main-menu key chosen by share of callers,
# then the key pressed in that branch's menu (an answer, or the complaint recording prompt).
LANGUAGE_MIX = {"en": 0.5, "ja": 0.35, "zh": 0.15}
BRANCH_MIX = {"payment": 0.5, "account": 0.2, "refund": 0.2, "complaint": 0.1}
BRANCH_KEY = {"payment": "1", "account": "2", "refund": "1", "complaint": "1"}
SILENCE_SHARE = 0.3  # calls that also let the main menu's Gather time out once

# Any of these in a response means the app hit a bug or an outage and recovered, or did not
# understand the (valid) input: the benchmark would be measuring the wrong thing.
FORBIDDEN_PROMPTS = ("recover", "fallback", "invalid_option", "too_many_attempts")
APP_ERROR_LINE = re.compile(r"\bERROR\b|\bCRITICAL\b|Traceback|Redis unavailable|WORKER TIMEOUT")


class BenchError(RuntimeError):
    """Setup or verification failed: the figures would mean nothing."""


# ----- traffic -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hook:
    """One pre-signed webhook request and what a correct answer looks like."""

    path: str
    body: str
    signature: str
    expect_status: int
    expect_text: str | None  # must be among the hotline's <Say> texts (None: no check)
    label: str
    step: str  # incoming, language, menu, branch, silence, status

    def headers(self) -> dict[str, str]:
        return {"Content-Type": FORM_TYPE, "X-Twilio-Signature": self.signature, "User-Agent": USER_AGENT}

    def raw(self, host: str) -> bytes:
        body = self.body.encode("ascii")
        lines = [f"POST {self.path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{k}: {v}" for k, v in self.headers().items()]
        lines += [f"Content-Length: {len(body)}", "", ""]
        return "\r\n".join(lines).encode("ascii") + body


def _weighted(rng: random.Random, mix: dict[str, float]) -> str:
    return rng.choices(list(mix), weights=list(mix.values()))[0]


def _node_text(node: dict, lang: str) -> str:
    return (node.get("message") or node.get("prompt"))[lang]


def build_traffic(n_calls: int, base_url: str, config_path: Path = HOTLINE_CONFIG, seed: int = 20261124) -> list[Hook]:
    """Whole simulated calls, signed for `base_url`, in call order (a call's requests together)."""
    import yaml
    from twilio.request_validator import RequestValidator

    config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    nodes = config["menu"]["nodes"]
    root = config["menu"]["root"]
    main_keys = {o["goto"]: o["key"] for o in nodes[root]["options"]}
    prompts = config["prompts"]
    validator = RequestValidator(AUTH_TOKEN)
    rng = random.Random(seed)
    account_sid = "AC" + f"{rng.getrandbits(128):032x}"
    hooks: list[Hook] = []

    def hook(path: str, form: dict, status: int, text: str | None, label: str) -> None:
        signature = validator.compute_signature(base_url + path, form)
        step = steps[len(hooks) - first]
        hooks.append(Hook(path, urllib.parse.urlencode(form), signature, status, text, label, step))

    for _ in range(n_calls):
        caller = "+8190" + "".join(rng.choice("0123456789") for _ in range(8))
        called = "+815012345678"
        base = {
            "CallSid": "CA" + f"{rng.getrandbits(128):032x}",
            "AccountSid": account_sid,
            "From": caller,
            "To": called,
            "Caller": caller,
            "Called": called,
            "CallStatus": "in-progress",
            "ApiVersion": "2010-04-01",
            "Direction": "inbound",
        }
        lang = _weighted(rng, LANGUAGE_MIX)
        branch = _weighted(rng, BRANCH_MIX)
        branch_options = {o["key"]: o["goto"] for o in nodes[branch]["options"]}
        leaf = branch_options[BRANCH_KEY[branch]]
        lang_key = config["languages"][lang]["key"]
        silent = rng.random() < SILENCE_SHARE
        steps = ["incoming", "language", "menu", "branch"] + (["silence"] if silent else []) + ["status"]
        first = len(hooks)
        hook("/voice/incoming", base, 200, prompts["greeting"][config["default_language"]], "incoming")
        hook(
            "/voice/language?attempt=1",
            {**base, "Digits": lang_key},
            200,
            _node_text(nodes[root], lang),
            f"language {lang}",
        )
        hook(
            f"/voice/{lang}/node/{root}/choice?attempt=1",
            {**base, "Digits": main_keys[branch]},
            200,
            _node_text(nodes[branch], lang),
            f"{root} -> {branch}",
        )
        hook(
            f"/voice/{lang}/node/{branch}/choice?attempt=1",
            {**base, "Digits": BRANCH_KEY[branch]},
            200,
            _node_text(nodes[leaf], lang),
            f"{branch} -> {leaf}",
        )
        if silent:
            hook(
                f"/voice/{lang}/node/{root}/silence?attempt=1", base, 200, prompts["no_input"][lang], f"{root} silence"
            )
        status = {**base, "CallStatus": "completed", "CallDuration": "42", "SequenceNumber": "0"}
        hook("/voice/status", status, 204, None, "status completed")
    return hooks


def forbidden_texts(config_path: Path) -> list[str]:
    import yaml

    prompts = yaml.safe_load(config_path.read_text(encoding="utf-8"))["prompts"]
    return [text for name in FORBIDDEN_PROMPTS for text in prompts.get(name, {}).values()]


def verify(port: int, hooks: list[Hook], kind: str, config_path: Path = HOTLINE_CONFIG) -> list[str]:
    """Send every request once, in order; return what was wrong (empty: all good)."""
    problems: list[str] = []
    forbidden = forbidden_texts(config_path) if kind == "hotline" else []
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        for n, h in enumerate(hooks):
            try:
                conn.request("POST", h.path, body=h.body, headers=h.headers())
                resp = conn.getresponse()
                body = resp.read().decode("utf-8", "replace")
            except (OSError, http.client.HTTPException) as exc:
                problems.append(f"#{n} {h.label} POST {h.path}: {type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
                continue
            wrong = _check(kind, h, resp.status, resp.getheader("Content-Type") or "", body, forbidden)
            if wrong:
                problems.append(f"#{n} {h.label} POST {h.path}: {wrong}")
    finally:
        conn.close()
    return problems


def _check(kind: str, h: Hook, status: int, ctype: str, body: str, forbidden: list[str]) -> str | None:
    expected = h.expect_status if kind == "hotline" else 200
    if status != expected:
        return f"HTTP {status}, expected {expected}: {body[:300]!r}"
    if status == 204:
        return None
    if not ctype.startswith("text/xml"):
        return f"Content-Type {ctype!r}, expected text/xml"
    if kind == "bare":
        return None if body == BARE_TWIML else f"unexpected body {body[:200]!r}"
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        return f"not XML ({exc}): {body[:200]!r}"
    said = " ".join((e.text or "") for e in root.iter("Say"))
    if root.tag != "Response":
        return f"root element {root.tag}, expected Response"
    bad = next((t for t in forbidden if t in said), None)
    if bad:
        return f"the app recovered / refused instead of answering: says {bad[:60]!r}"
    if h.expect_text and h.expect_text not in said:
        return f"does not say {h.expect_text[:60]!r}...; said {said[:120]!r}"
    return None


# ----- servers -------------------------------------------------------------------------------


def gunicorn_settings(env: dict[str, str]) -> dict[str, object]:
    """What gunicorn.conf.py resolves to under `env` (it reads the environment at import)."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        ns = runpy.run_path(str(GUNICORN_CONF))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    keys = ("workers", "threads", "worker_class", "worker_connections", "keepalive", "timeout", "accesslog")
    return {k: ns.get(k) for k in keys}


class Server:
    """A gunicorn master (and its workers) in its own session, stopped with it."""

    def __init__(self, name: str, app_spec: str, port: int, env: dict[str, str], log_path: Path):
        self.name, self.app_spec, self.port, self.env, self.log_path = name, app_spec, port, env, log_path
        self.proc: subprocess.Popen | None = None
        self._log_offset = 0

    def start(self) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._log = log
        # No control socket: gunicorn's default path is per user, and two masters would share it.
        args = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "--no-control-socket", self.app_spec]
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        path = "/healthz" if self.name == "hotline" else "/"
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name}: gunicorn exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                conn.close()
                if self.name != "hotline" or resp.status == 200:
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: not ready after {timeout_s:.0f} s:\n{self.log_tail()}")
            time.sleep(0.2)

    def connection_spread(self) -> list[int]:
        """Established client connections held by each worker, busiest first. gthread pins a
        keep-alive connection to the worker that accepted it, so an uneven spread caps throughput."""
        inodes: set[str] = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    rows = f.read().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                fields = row.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == self.port:
                    inodes.add(f"socket:[{fields[9]}]")
        spread = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) != self.proc.pid:
                        continue
                fds = os.listdir(f"/proc/{entry.name}/fd")
                spread.append(sum(1 for fd in fds if os.readlink(f"/proc/{entry.name}/fd/{fd}") in inodes))
            except OSError:
                continue
        return sorted(spread, reverse=True)

    def new_error_lines(self) -> list[str]:
        """Log lines since the last call that say something went wrong."""
        with open(self.log_path, "rb") as f:
            f.seek(self._log_offset)
            data = f.read()
        self._log_offset += len(data)
        lines = data.decode("utf-8", "replace").splitlines()
        return [line for line in lines if APP_ERROR_LINE.search(line)]

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGINT)  # gunicorn: quick shutdown of master and workers
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        if proc is not None:
            try:  # anything left in the session we started (workers of a master that died)
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if getattr(self, "_log", None):
            self._log.close()


# ----- load generators -------------------------------------------------------------------------


@dataclass
class RunResult:
    target: str
    rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    requests: int
    errors: int
    error_detail: dict[str, int] = field(default_factory=dict)
    conns_per_worker: list[int] = field(default_factory=list)  # sampled once, early in the run
    server_cpu: float = 0.0  # CPU the target's gunicorn processes used, in cores (2.0 = both of 2)
    other_cpu: float = 0.0  # CPU used by processes this benchmark did not start, in cores


class CpuMeter:
    """Splits the machine's CPU time over one run: the target's gunicorn processes, this benchmark's
    own (itself, wrk, its Redis), and everything else on the machine, which is noise for the figures."""

    HZ = os.sysconf("SC_CLK_TCK")

    def __init__(self, own_pids: list[int]):
        self.own_pids = own_pids

    @staticmethod
    def _machine_busy() -> int:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return v[0] + v[1] + v[2] + v[5] + v[6] + v[7]  # user nice system irq softirq steal

    @staticmethod
    def _group_cpu(pgids: set[int], pids: set[int]) -> int:
        total = 0
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) in pgids or int(entry.name) in pids:
                total += int(fields[11]) + int(fields[12])  # utime stime
        return total

    def snapshot(self, server_pgid: int, other_pgids: set[int]) -> tuple:
        t = os.times()
        own = round((t.user + t.system + t.children_user + t.children_system) * self.HZ)
        return (
            time.monotonic(),
            self._machine_busy(),
            self._group_cpu({server_pgid}, set()),
            self._group_cpu(other_pgids, set(self.own_pids)) + own,
        )

    def cores(self, before: tuple, after: tuple) -> tuple[float, float]:
        """(server cores, foreign cores) between two snapshots."""
        seconds = max(after[0] - before[0], 1e-3)
        busy, server, ours = (after[i] - before[i] for i in (1, 2, 3))
        other = max(0, busy - server - ours)
        return server / self.HZ / seconds, other / self.HZ / seconds


def _lua_string(text: str) -> str:
    return (
        '"'
        + "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else f"\\{b:03d}" for b in text.encode("utf-8"))
        + '"'
    )


def write_wrk_script(hooks: list[Hook], path: Path) -> None:
    rows = ",\n".join(f"  {{{_lua_string(h.path)}, {_lua_string(h.body)}, {_lua_string(h.signature)}}}" for h in hooks)
    path.write_text(
        f"""-- Generated by bench/webhooks.py: cycles through pre-signed Twilio webhooks.
local data = {{
{rows}
}}
local reqs = {{}}
local n = 0
local i = 0
local nthreads = 0

function setup(thread)
  thread:set("thread_index", nthreads)
  nthreads = nthreads + 1
end

function init(args)
  for _, r in ipairs(data) do
    n = n + 1
    reqs[n] = wrk.format("POST", r[1], {{
      ["Content-Type"] = {_lua_string(FORM_TYPE)},
      ["X-Twilio-Signature"] = r[3],
      ["User-Agent"] = {_lua_string(USER_AGENT)},
    }}, r[2])
  end
  i = ((thread_index or 0) * 997) % n  -- threads start at different calls
end

function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %.1f, "p99_us": %.1f, "p999_us": %.1f, ' ..
    '"mean_us": %.1f, "max_us": %.1f}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50.0), latency:percentile(99.0), latency:percentile(99.9),
    latency.mean, latency.max))
end
""",
        encoding="ascii",
    )


def run_wrk(target: str, port: int, script: Path, duration: float, connections: int, threads: int) -> RunResult:
    threads = max(1, min(threads, connections))
    args = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "-s",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=duration + 60, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk against {target} did not finish in time") from exc
    line = next((x for x in out.stdout.splitlines() if x.startswith("BENCHJSON ")), None)
    if out.returncode != 0 or line is None:
        raise BenchError(f"wrk against {target} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    r = json.loads(line.removeprefix("BENCHJSON "))
    detail = {k: int(r[k]) for k in ("connect", "read", "write", "status", "timeout") if r[k]}
    return RunResult(
        target,
        r["requests"] / (r["duration_us"] / 1e6),
        r["p50_us"] / 1000,
        r["p99_us"] / 1000,
        r["p999_us"] / 1000,
        int(r["requests"]),
        sum(detail.values()),
        detail,
    )


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    close = headers.get("connection", "").lower() == "close"
    if status in (204, 304) or 100 <= status < 200:
        return status, close
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.read()  # body to EOF
        close = True
    return status, close


async def _python_load(port: int, hooks: list[Hook], duration: float, connections: int) -> RunResult:
    raw = [h.raw(f"127.0.0.1:{port}") for h in hooks]
    n = len(raw)
    latencies: list[float] = []
    errors = {"connect": 0, "read": 0, "status": 0, "timeout": 0}
    start = time.perf_counter()
    deadline = start + duration

    async def connection(k: int) -> None:
        i = (k * n) // connections
        reader = writer = None
        while time.perf_counter() < deadline:
            if writer is None:
                try:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                except (TimeoutError, OSError):
                    errors["connect"] += 1
                    await asyncio.sleep(0.05)
                    continue
            request = raw[i % n]
            i += 1
            t0 = time.perf_counter()
            try:
                writer.write(request)
                status, close = await asyncio.wait_for(_read_response(reader), 5)
            except TimeoutError:
                errors["timeout"] += 1
                close, status = True, 0
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                errors["read"] += 1
                close, status = True, 0
            else:
                latencies.append(time.perf_counter() - t0)
                if status >= 400:
                    errors["status"] += 1
            if close:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(connection(k) for k in range(connections)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    detail = {k: v for k, v in errors.items() if v}
    return RunResult(
        "",
        len(latencies) / elapsed,
        _percentile(latencies, 50) * 1000,
        _percentile(latencies, 99) * 1000,
        _percentile(latencies, 99.9) * 1000,
        len(latencies),
        sum(detail.values()),
        detail,
    )


def run_python(target: str, port: int, hooks: list[Hook], duration: float, connections: int) -> RunResult:
    result = asyncio.run(_python_load(port, hooks, duration, connections))
    result.target = target
    return result


# ----- the run -----------------------------------------------------------------------------------


@contextmanager
def time_limit(seconds: int):
    """The whole benchmark is bounded: SIGALRM turns into an exception, so cleanup still runs."""

    def expired(signum, frame):  # noqa: ANN001, ARG001
        raise TimeoutError(f"benchmark exceeded its {seconds} s time limit")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=15.0, help="seconds per measured run (default 15)")
    p.add_argument("--connections", type=int, default=16, help="concurrent keep-alive connections (default 16)")
    p.add_argument("--runs", type=int, default=3, help="measured runs per target, interleaved (default 3)")
    p.add_argument(
        "--reruns",
        type=int,
        default=3,
        help=f"extra pairs allowed to replace pairs disturbed by other processes (> {NOISE_CORES} cores; default 3)",
    )
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load per target first (default 3)")
    p.add_argument(
        "--calls", type=int, default=400, help="distinct simulated calls in the replayed traffic (default 400)"
    )
    p.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="auto: wrk if installed, else the Python generator",
    )
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1: leaves CPU to the servers)")
    p.add_argument("--workers", type=int, help="set WEB_CONCURRENCY for both servers (default: gunicorn.conf.py's)")
    p.add_argument("--threads", type=int, help="set GUNICORN_THREADS for both servers (default: gunicorn.conf.py's)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="CI sanity run: 1 short run each, 4 connections, no targets; exit 0 iff no request failed",
    )
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/webhooks-*.json")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the gunicorn and redis logs")
    args = p.parse_args(argv)
    if args.smoke:
        args.duration, args.runs, args.warmup = min(args.duration, 2.0), 1, 0.0
        args.connections = min(args.connections, 4)
        args.calls = min(args.calls, 40)
        args.no_save = True
    if args.runs < 1 or args.connections < 1 or args.duration <= 0 or args.calls < 1:
        p.error("--runs, --connections, --duration and --calls must be positive")
    return args


def _fmt_row(name: str, rps: float, p50: float, p99: float, p999: float, errors: int) -> str:
    return f"{name:<10}{rps:>10.1f}{p50:>10.2f}{p99:>10.2f}{p999:>11.2f}{errors:>9d}"


HEADER = f"{'target':<10}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'p99.9 ms':>11}{'errors':>9}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    if args.loadgen == "wrk" and not shutil.which("wrk"):
        print("wrk not found on PATH (Debian/Ubuntu: apt-get install -y wrk); or use --loadgen python", file=sys.stderr)
        return 3
    use_wrk = args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk") is not None)
    if use_wrk:
        version = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False).stdout
        loadgen = (version.split("Copyright")[0].strip() or "wrk") + f" ({args.wrk_threads} thread)"
    else:
        loadgen = "python asyncio generator (bench/webhooks.py; wrk not used" + (
            ": not installed)" if args.loadgen == "auto" else ")"
        )

    per_run = args.duration + 10
    budget = int(180 + 2 * args.warmup + 2 * args.runs * per_run + (60 if use_wrk else 120))
    tmp = Path(tempfile.mkdtemp(prefix="hotline-bench-"))
    servers: list[Server] = []
    started: dict[str, object] = {}  # what _bench started that is not a Server (the Redis)
    failed = True
    try:
        with time_limit(budget):
            code = _bench(args, use_wrk, loadgen, tmp, servers, started)
            failed = code not in (0, 2)
            return code
    except (BenchError, TimeoutError) as exc:
        print(f"\nBENCHMARK FAILED: {exc}", file=sys.stderr)
        for s in servers:
            print(f"--- {s.name} log ({s.log_path}) ---\n{s.log_tail()}", file=sys.stderr)
        return 3
    finally:
        for s in servers:
            s.stop()
        if "redis" in started:
            started["redis"].stop()
        if args.keep_logs or failed:
            print(f"(logs kept in {tmp})", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _bench(
    args: argparse.Namespace, use_wrk: bool, loadgen: str, tmp: Path, servers: list[Server], started: dict
) -> int:
    from ivr.localredis import free_port, start_local_redis
    from ivr.tickets.migrate import upgrade

    redis_server = start_local_redis()
    started["redis"] = redis_server
    database_url = f"sqlite:///{tmp / 'hotline.db'}"
    upgrade(database_url)

    # A snapshot of the config: an edit of config/hotline.yaml during the run (hot reload) must
    # not change what is measured halfway through.
    config_path = tmp / "hotline.yaml"
    shutil.copyfile(HOTLINE_CONFIG, config_path)

    hotline_port, bare_port = free_port(), free_port()
    while bare_port == hotline_port:
        bare_port = free_port()
    base_env = {k: v for k, v in os.environ.items() if k not in ("GUNICORN_ACCESS_LOG", "PORT")}
    if args.workers:
        base_env["WEB_CONCURRENCY"] = str(args.workers)
    if args.threads:
        base_env["GUNICORN_THREADS"] = str(args.threads)
    base_env["PYTHONUNBUFFERED"] = "1"
    hotline_base = f"http://127.0.0.1:{hotline_port}"
    hotline_env = {
        **base_env,
        "GUNICORN_BIND": f"127.0.0.1:{hotline_port}",
        "REDIS_URL": redis_server.url,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "PUBLIC_BASE_URL": hotline_base,
        "DATABASE_URL": database_url,
        "HOTLINE_CONFIG": str(config_path),
    }
    bare_env = {**base_env, "GUNICORN_BIND": f"127.0.0.1:{bare_port}"}
    settings = gunicorn_settings(hotline_env)
    if settings != gunicorn_settings(bare_env):  # pragma: no cover - same env but the bind
        raise BenchError("the two servers would not get the same gunicorn settings")

    hotline = Server("hotline", "wsgi:app", hotline_port, hotline_env, tmp / "hotline.log")
    bare = Server("bare", "bench.bare_app:app", bare_port, bare_env, tmp / "bare.log")
    for s in (hotline, bare):
        servers.append(s)
        s.start()
    for s in (hotline, bare):
        s.wait_ready()

    hooks = build_traffic(args.calls, hotline_base, config_path)
    for s in (hotline, bare):
        problems = verify(s.port, hooks, s.name, config_path)
        problems += [f"{s.name} logged: {line}" for line in s.new_error_lines()]
        if problems:
            shown = "\n".join("  " + p for p in problems[:15])
            more = f"\n  ... and {len(problems) - 15} more" if len(problems) > 15 else ""
            raise BenchError(f"{s.name}: {len(problems)} of {len(hooks)} pre-built requests failed:\n{shown}{more}")
    kinds: dict[str, int] = {}
    for h in hooks:
        kinds[h.step] = kinds.get(h.step, 0) + 1

    script = tmp / "webhooks.lua"
    if use_wrk:
        write_wrk_script(hooks, script)

    meter = CpuMeter([redis_server.process.pid])

    def load(server: Server, duration: float) -> RunResult:
        others = {s.proc.pid for s in servers if s is not server}
        before = meter.snapshot(server.proc.pid, others)
        spread: list[list[int]] = []
        sampler = threading.Timer(min(1.5, duration / 2), lambda: spread.append(server.connection_spread()))
        sampler.start()
        try:
            if use_wrk:
                result = run_wrk(server.name, server.port, script, duration, args.connections, args.wrk_threads)
            else:
                result = run_python(server.name, server.port, hooks, duration, args.connections)
        finally:
            sampler.cancel()
            sampler.join()
        result.conns_per_worker = spread[0] if spread else []
        result.server_cpu, result.other_cpu = meter.cores(before, meter.snapshot(server.proc.pid, others))
        logged = server.new_error_lines()
        if logged:
            result.errors += len(logged)
            result.error_detail["logged"] = len(logged)
            result.error_detail.setdefault("first_logged", logged[0][:200])  # type: ignore[arg-type]
        return result

    print(
        f"Hotline webhook benchmark{' (smoke)' if args.smoke else ''}: "
        f"{dt.datetime.now().isoformat(timespec='seconds')}"
    )
    print(f"  machine      {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}")
    print(
        f"  gunicorn     {GUNICORN_CONF.name}: worker_class={settings['worker_class']} workers={settings['workers']} "
        f"threads={settings['threads']} keepalive={settings['keepalive']} (same for both servers)"
    )
    print(
        f"  load         {loadgen}; {args.connections} keep-alive connections; "
        f"{args.duration:g} s x {args.runs} run(s) per target, interleaved; warm-up {args.warmup:g} s"
    )
    print(
        f"  traffic      {len(hooks)} pre-signed webhooks from {args.calls} calls, replayed in a cycle; "
        + ", ".join(f"{k} {v}" for k, v in kinds.items())
    )
    digest = hashlib.sha256(config_path.read_bytes()).hexdigest()[:12]
    print(f"  config       snapshot of config/hotline.yaml (sha256 {digest}) taken at start")
    print("  verified     every request once against each server: OK")
    sys.stdout.flush()

    warmup_errors = 0
    if args.warmup > 0:
        for s in (hotline, bare):
            warmup_errors += load(s, args.warmup).errors

    results: dict[str, list[RunResult]] = {"hotline": [], "bare": []}
    disturbed: dict[str, list[RunResult]] = {"hotline": [], "bare": []}
    print(
        "\nruns (srv cpu: cores used by the target's gunicorn; other: cores used by processes this "
        "benchmark did not start, i.e. noise;\n      conns/worker: how gunicorn's workers shared the "
        f"keep-alive connections)\n{'run':<5}{HEADER}{'srv cpu':>9}{'other':>8}  conns/worker"
    )
    # A pair of runs during which other processes took CPU (the machine's neighbours: `other`)
    # says more about them than about us: it is repeated, up to --reruns times, and the median
    # is over the undisturbed pairs (all pairs are printed and saved).
    run = 0
    while len(results["hotline"]) < args.runs and run < args.runs + args.reruns:
        order = (hotline, bare) if run % 2 == 0 else (bare, hotline)
        pair = []
        for s in order:
            time.sleep(1.0)
            r = load(s, args.duration)
            pair.append(r)
            detail = f"  {r.error_detail}" if r.error_detail else ""
            spread = "/".join(map(str, r.conns_per_worker)) or "?"
            cpu = f"{r.server_cpu:>9.2f}{r.other_cpu:>8.2f}  {spread:<13}"
            print(f"{run + 1:<5}{_fmt_row(r.target, r.rps, r.p50_ms, r.p99_ms, r.p999_ms, r.errors)}{cpu}{detail}")
            sys.stdout.flush()
        noisy = max(r.other_cpu for r in pair) > NOISE_CORES and not args.smoke
        for r in pair:
            (disturbed if noisy else results)[r.target].append(r)
        if noisy:
            print(f"     (pair {run + 1} disturbed: other > {NOISE_CORES} cores; repeated)")
        run += 1
    if len(results["hotline"]) < args.runs:
        print("     not enough undisturbed pairs: the disturbed ones count too (the figures are noisy)")
        for name in results:
            results[name].extend(disturbed[name])

    med = {
        name: {
            "rps": statistics.median(r.rps for r in rs),
            "p50_ms": statistics.median(r.p50_ms for r in rs),
            "p99_ms": statistics.median(r.p99_ms for r in rs),
            "p999_ms": statistics.median(r.p999_ms for r in rs),
            "errors": sum(r.errors for r in rs),
        }
        for name, rs in results.items()
    }
    ratio = med["hotline"]["rps"] / med["bare"]["rps"] if med["bare"]["rps"] else 0.0
    total_errors = sum(m["errors"] for m in med.values()) + warmup_errors

    counted = len(results["hotline"])
    label = "median of 1 run" if counted == 1 else f"median of {counted} runs"
    if any(disturbed.values()):
        label += f"; {len(disturbed['hotline'])} disturbed pair(s) left out"
    print(f"\nresult ({label}; errors: total over all runs)")
    print(HEADER)
    for name in ("hotline", "bare"):
        m = med[name]
        print(_fmt_row(name, m["rps"], m["p50_ms"], m["p99_ms"], m["p999_ms"], m["errors"]))
    print(f"ratio hotline/bare throughput: {ratio:.3f} ({ratio * 100:.1f} %)")
    if warmup_errors:
        print(f"errors during warm-up: {warmup_errors}")
    noise = max(r.other_cpu for rs in results.values() for r in rs)
    if noise > NOISE_CORES:
        print(
            f"WARNING: other processes on this machine used up to {noise:.2f} of {os.cpu_count()} cores "
            "during a run: the figures are noisy; rerun on an otherwise idle machine"
        )

    ok_ratio = ratio >= TARGET_RATIO
    ok_p99 = med["hotline"]["p99_ms"] <= TARGET_P99_MS
    note = " (informational: --smoke does not check targets)" if args.smoke else ""
    at = f"at {args.connections} connections"
    print(
        f"{'PASS' if ok_ratio else 'FAIL'} throughput: hotline {med['hotline']['rps']:.0f} req/s = "
        f"{ratio * 100:.1f} % of bare Flask {med['bare']['rps']:.0f} req/s {at} "
        f"(target >= {TARGET_RATIO * 100:.0f} %){note}"
    )
    print(
        f"{'PASS' if ok_p99 else 'FAIL'} latency: hotline p99 {med['hotline']['p99_ms']:.2f} ms {at} "
        f"(target <= {TARGET_P99_MS:g} ms){note}"
    )
    if total_errors:
        print(f"FAIL errors: {total_errors} request(s) failed (see the runs above)")
    else:
        print("PASS errors: no request failed")

    if not args.no_save:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        out = RESULTS_DIR / f"webhooks-{stamp}.json"
        out.write_text(
            json.dumps(
                {
                    "when": dt.datetime.now().isoformat(timespec="seconds"),
                    "cpus": os.cpu_count(),
                    "loadgen": loadgen,
                    "gunicorn": settings,
                    "connections": args.connections,
                    "duration_s": args.duration,
                    "runs": {k: [r.__dict__ for r in v] for k, v in results.items()},
                    "disturbed_runs": {k: [r.__dict__ for r in v] for k, v in disturbed.items()},
                    "median": med,
                    "ratio": ratio,
                    "targets": {"ratio": TARGET_RATIO, "p99_ms": TARGET_P99_MS},
                    "pass": {"ratio": ok_ratio, "p99": ok_p99, "errors": total_errors == 0},
                },
                indent=2,
                default=str,
            )
        )
        print(f"(saved {out.relative_to(ROOT)})")

    if total_errors:
        return 1
    if not args.smoke and not (ok_ratio and ok_p99):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
