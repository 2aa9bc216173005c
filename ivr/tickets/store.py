"""The ticket store (SQLAlchemy 2): fold a call's events in, and answer the ops API."""

from __future__ import annotations

import functools
import hashlib
import logging
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ivr.tickets.models import Ticket, TicketEvent
from ivr.tickets.summary import summarize

log = logging.getLogger(__name__)


_MERGE_TRIES = 3


def _merging_again_after_a_race(sync: Callable[..., Ticket]) -> Callable[..., Ticket]:
    @functools.wraps(sync)
    def merged(self: TicketStore, call_sid: str, *args: object, **kwargs: object) -> Ticket:
        for attempt in range(1, _MERGE_TRIES + 1):
            try:
                return sync(self, call_sid, *args, **kwargs)
            except IntegrityError:
                if attempt == _MERGE_TRIES:
                    raise
                log.info("call %s: a concurrent sync wrote first; merging again", call_sid)
        raise AssertionError("unreachable")

    return merged


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DBAPI objects
    cursor = dbapi_connection.cursor()
    # busy_timeout waits instead of failing at once; WAL lets the API read while a worker writes.
    cursor.execute("PRAGMA busy_timeout=5000")
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:
        # Several processes opening a fresh file at once: one switches it (the mode is kept in
        # the file, and migrations set it too); the others carry on.
        log.info("sqlite: journal mode left to another process")
    cursor.close()


def set_wal(url: str) -> None:
    """Put an SQLite ticket store in WAL mode once, before workers start (migrations)."""
    if not url.startswith("sqlite:///"):
        return
    connection = sqlite3.connect(url.removeprefix("sqlite:///"))
    try:
        connection.execute("PRAGMA journal_mode=WAL")
    finally:
        connection.close()


EVENT_ID_LENGTH = 80


def stored_event_id(event_id: str) -> str:
    """The id an event is stored (and looked for) under: as it is when it fits the column, else
    a digest of it — cut short, two long ids (a recording's URL, an odd SequenceNumber) could
    share a prefix, and a cut id would never match the uncut one the next sync looks for."""
    if len(event_id) <= EVENT_ID_LENGTH:
        return event_id
    return "h-" + hashlib.sha1(event_id.encode(), usedforsecurity=False).hexdigest()


def _fitted(column: str, value: object) -> object:
    """A text no longer than its column (PostgreSQL refuses a longer one, and the ticket would
    never be written): Twilio's fields are bounded only by what a signed request carries."""
    length = getattr(getattr(Ticket.__table__.columns.get(column), "type", None), "length", None)
    return value[:length] if isinstance(value, str) and length else value


class TicketStore:
    def __init__(self, url: str):
        self.url = url
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.url, pool_pre_ping=True)
            if self._engine.dialect.name == "sqlite":
                event.listen(self._engine, "connect", _sqlite_pragmas)
            self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        return self._engine

    def session(self) -> Session:
        self.engine  # noqa: B018 - builds the sessionmaker on first use
        assert self._sessions is not None
        return self._sessions()

    @_merging_again_after_a_race
    def sync(
        self,
        call_sid: str,
        events: list[dict],
        reference: int | None,
        new_reference: Callable[[], int],
        now: datetime,
    ) -> Ticket:
        """Merge events into the call's ticket and rebuild its summary. Idempotent. Two syncs of
        one call at once (a ticket job and `flask hotline call`'s own, say): the second to commit
        fails on the unique constraints, and merges again over what the first wrote (RQ retries
        it should that fail too)."""
        with self.session() as session, session.begin():
            known = set(session.scalars(select(TicketEvent.event_id).where(TicketEvent.call_sid == call_sid)))
            for e in events:
                event_id = stored_event_id(e["id"])
                if event_id in known:
                    continue
                known.add(event_id)
                data = {k: v for k, v in e.items() if k not in ("id", "at", "kind")}
                session.add(
                    TicketEvent(
                        call_sid=call_sid,
                        event_id=event_id,
                        at=datetime.fromisoformat(e["at"]),
                        kind=e["kind"],
                        data=data,
                    )
                )
            session.flush()
            stored = session.scalars(
                select(TicketEvent).where(TicketEvent.call_sid == call_sid).order_by(TicketEvent.pk)
            ).all()
            fields = summarize([_as_event(row) for row in stored])
            ticket = session.scalar(select(Ticket).where(Ticket.call_sid == call_sid))
            if ticket is None:
                ticket_id = reference
                if ticket_id is None:
                    # Its start never reached Redis (an outage; a call only the fallback saw): nobody
                    # was told a reference, so any fresh one will do.
                    log.warning("call %s: no reference was handed out; allocating one", call_sid)
                    ticket_id = new_reference()
                elif session.get(Ticket, ticket_id) is not None:
                    # Redis lost its sequence before the floor was seeded again: the caller may have
                    # heard a number another ticket holds. Give this ticket a fresh one, loudly.
                    log.error("call %s: reference %s already taken, allocating another", call_sid, ticket_id)
                    ticket_id = new_reference()
                ticket = Ticket(id=ticket_id, call_sid=call_sid)
                session.add(ticket)
            for key, value in fields.items():
                setattr(ticket, key, _fitted(key, value))
            ticket.updated_at = now
        return ticket

    def max_reference(self) -> int:
        with self.session() as session:
            return session.scalar(select(func.max(Ticket.id))) or 0

    def max_callback_id(self, recent: int = 500) -> int:
        """The highest callback id on the newest `recent` tickets with a callback block. Ids
        grow with time, so the newest tickets hold the highest; reading them by the primary key
        (newest first) spares a scan of every ticket at each process start."""
        query = select(Ticket.callback).where(Ticket.callback.is_not(None)).order_by(Ticket.id.desc()).limit(recent)
        with self.session() as session:
            ids = [block.get("id") for block in session.scalars(query) if isinstance(block, dict)]
        return max((int(i) for i in ids if str(i).isdigit()), default=0)

    def get(self, ticket_id: int) -> Ticket | None:
        with self.session() as session:
            return session.get(Ticket, ticket_id)

    def find(
        self, call_sid: str | None = None, caller: str | None = None, since: datetime | None = None, limit: int = 50
    ) -> list[Ticket]:
        query = select(Ticket).order_by(Ticket.started_at.desc(), Ticket.id.desc()).limit(limit)
        if call_sid:
            query = query.where(Ticket.call_sid == call_sid)
        if caller:
            query = query.where(Ticket.caller == caller)
        if since:
            # In UTC, as the times are stored: SQLite keeps them without their offset and compares
            # text, so 14:32+09:00 would be read as 14:32 UTC.
            since = since.astimezone(UTC) if since.tzinfo else since
            query = query.where(Ticket.started_at >= since)
        with self.session() as session:
            return list(session.scalars(query))

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")


def _as_event(row: TicketEvent) -> dict:
    at = row.at if row.at.tzinfo else row.at.replace(tzinfo=UTC)  # SQLite drops the zone
    return {**row.data, "id": row.event_id, "at": at.isoformat(), "kind": row.kind}


def ticket_json(ticket: Ticket) -> dict:
    def iso(value: datetime | None) -> str | None:
        if value is None:
            return None
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()

    return {
        "id": ticket.id,
        "call_sid": ticket.call_sid,
        "caller": ticket.caller,
        "called": ticket.called,
        "language": ticket.language,
        "started_at": iso(ticket.started_at),
        "ended_at": iso(ticket.ended_at),
        "duration_s": ticket.duration_s,
        "branch": ticket.branch,
        "outcome": ticket.outcome,
        "status": ticket.status,
        "path": ticket.path,
        "recordings": ticket.recordings,
        "queue": ticket.queue,
        "callback": ticket.callback,
        "agent": ticket.agent,
        "disposition": ticket.disposition,
        "notes": ticket.notes,
        "updated_at": iso(ticket.updated_at),
    }
