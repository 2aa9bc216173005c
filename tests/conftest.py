"""Shared fixtures: a throwaway Redis per run, a fresh database per test (SQLite, and PostgreSQL
when TEST_DATABASE_URL is set), the app with an injected clock, a signing call walker, a real
RQ worker, and a guard that fails any outbound HTTP request nobody expected."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis as redis_lib
import responses
import sqlalchemy
from rq import Queue, SimpleWorker
from rq.registry import FailedJobRegistry

from ivr import create_app
from ivr.localredis import start_local_redis
from ivr.services import TICKETS_QUEUE
from ivr.simulator import CallWalker
from ivr.tickets.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = ROOT / "config" / "hotline.yaml"
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "1" * 32
OPS_TOKEN = "ops-token-for-tests"
BASE_URL = "https://hotline.example.com"
# Tuesday 2026-11-24 10:00 in Tokyo: the line is open (Monday the 23rd is a public holiday).
OPEN_TIME = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
# Saturday 2026-11-28 22:00 in Tokyo: closed until Monday 09:00.
CLOSED_TIME = datetime(2026, 11, 28, 13, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Sleeps(list):
    """An injected sleep that records how long the code wanted to wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


# With REDIS_URL set, the suite uses that server, in a database of its own that it empties
# before every test: the URL's database when it names one other than 0, otherwise 15 (so a
# Redis you run the hotline on, in database 0, keeps its data). Unset: a throwaway server.
TEST_REDIS_DB = 15


def _test_database_url(url: str) -> str:
    if redis_lib.connection.parse_url(url).get("db"):
        return url
    parts = urlsplit(url)
    if parts.scheme == "unix":  # the path is the socket; the database is a query parameter
        query = "&".join(q for q in [parts.query, f"db={TEST_REDIS_DB}"] if q)
        return urlunsplit(parts._replace(query=query))
    return urlunsplit(parts._replace(path=f"/{TEST_REDIS_DB}"))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    if os.environ.get("REDIS_URL"):
        yield _test_database_url(os.environ["REDIS_URL"])
        return
    server = start_local_redis()
    yield server.url
    server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    redis_lib.Redis.from_url(redis_server).flushdb()
    return redis_server


def _postgres_schema_url(base_url: str) -> Iterator[str]:
    """A fresh schema in the test database, dropped afterwards; the URL pins search_path to it."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = sqlalchemy.make_url(base_url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    admin = sqlalchemy.create_engine(url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


DATABASES = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])


def _fresh_database(kind: str, path: Path) -> Iterator[str]:
    """A migrated, empty ticket database: an SQLite file at `path`, or a PostgreSQL schema."""
    if kind == "sqlite":
        url = f"sqlite:///{path}"
        upgrade(url)
        yield url
    else:
        for url in _postgres_schema_url(os.environ["TEST_DATABASE_URL"]):
            upgrade(url)
            yield url


@pytest.fixture(params=DATABASES)
def any_database_url(request, tmp_path) -> Iterator[str]:
    """Runs the test once per configured database (SQLite always; PostgreSQL with TEST_DATABASE_URL)."""
    yield from _fresh_database(request.param, tmp_path / "tickets-any.db")


def pytest_generate_tests(metafunc) -> None:
    """Tests marked `any_database` run once per configured database (their app's ticket store)."""
    if metafunc.definition.get_closest_marker("any_database") and "database_url" in metafunc.fixturenames:
        metafunc.parametrize("database_url", DATABASES, indirect=True)


@pytest.fixture
def database_url(request, tmp_path) -> Iterator[str]:
    """SQLite by default; for a test marked `any_database`, each configured database in turn."""
    yield from _fresh_database(getattr(request, "param", "sqlite"), tmp_path / "tickets.db")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(OPEN_TIME)


@pytest.fixture
def config_path() -> Path:
    return SHIPPED_CONFIG


@pytest.fixture
def make_app(redis_url, database_url, clock, config_path):
    made = []

    def make(**overrides):
        settings = {
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "HOTLINE_CONFIG": str(config_path),
            "OPS_API_TOKEN": OPS_TOKEN,
            "PUBLIC_BASE_URL": BASE_URL,
            "CLOCK": clock,
            "CONFIG_RELOAD_INTERVAL_S": 0,
            "TESTING": True,
        }
        settings.update(overrides)
        made.append(create_app(settings))
        return made[-1]

    yield make
    for app in made:
        app.extensions["hotline"].close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def hotline(app):
    """The app's services (Redis, routing, callbacks, the ticket store)."""
    return app.extensions["hotline"]


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture(autouse=True)
def no_unexpected_http() -> Iterator[responses.RequestsMock]:
    """Any outbound HTTP request a test did not register fails it (ConnectionError)."""
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def transport_for(app, base_url: str = BASE_URL):
    client = app.test_client()

    def transport(url: str, form: dict, headers: dict):
        path = url.removeprefix(base_url)
        response = client.post(path, data=form, headers=headers, base_url=base_url)
        return response.status_code, response.content_type or "", response.get_data(as_text=True)

    return transport


@pytest.fixture
def walker(app):
    """walker(**options).dial([...]) places one signed call through the app."""

    def make(**options) -> CallWalker:
        return CallWalker(transport_for(app), AUTH_TOKEN, base_url=BASE_URL, **options)

    return make


@pytest.fixture
def run_jobs(app):
    """Run every queued job with a real RQ worker (in-process, burst) inside the app context."""

    def run() -> int:
        """Returns how many jobs ran; fails if any of them failed."""
        with app.app_context():
            hotline = app.extensions["hotline"]
            hotline.dispatch_due_tickets()  # what the worker's dispatcher does every second
            queue = Queue(TICKETS_QUEUE, connection=hotline.redis)
            queued = queue.count
            SimpleWorker([queue], connection=hotline.redis).work(burst=True)
            failed = FailedJobRegistry(queue=queue).get_job_ids()
            assert not failed, f"ticket jobs failed: {failed}"
            return queued

    return run


@pytest.fixture
def ticket_for(app, run_jobs):
    """Run the queued ticket jobs, then return the call's ticket as the API shows it."""

    def get(call_sid: str) -> dict:
        run_jobs()
        response = app.test_client().get(
            f"/api/tickets?call_sid={call_sid}", headers={"Authorization": f"Bearer {OPS_TOKEN}"}
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        tickets = response.get_json()["tickets"]
        assert len(tickets) == 1, tickets
        return tickets[0]

    return get
