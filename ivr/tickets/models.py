"""Ticket tables. `ticket_events` keeps every event ever synced (the union, deduplicated by
event id), so a late or repeated sync only ever adds to a ticket; `tickets` is the summary
rebuilt from those events."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, DateTime, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False)
    call_sid: Mapped[str] = mapped_column(String(34), unique=True)
    caller: Mapped[str] = mapped_column(String(255), index=True, default="")
    called: Mapped[str] = mapped_column(String(255), default="")
    language: Mapped[str | None] = mapped_column(String(8))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    duration_s: Mapped[int | None] = mapped_column(Integer)
    branch: Mapped[str] = mapped_column(String(16), default="other")
    outcome: Mapped[str] = mapped_column(String(32), default="in_progress")
    status: Mapped[str | None] = mapped_column(String(32))
    path: Mapped[list] = mapped_column(JSON, default=list)
    recordings: Mapped[list] = mapped_column(JSON, default=list)
    queue: Mapped[dict | None] = mapped_column(JSON)
    callback: Mapped[dict | None] = mapped_column(JSON)
    agent: Mapped[str | None] = mapped_column(String(32), index=True)
    disposition: Mapped[str | None] = mapped_column(String(32))
    notes: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TicketEvent(Base):
    __tablename__ = "ticket_events"
    __table_args__ = (UniqueConstraint("call_sid", "event_id", name="uq_ticket_events_call_event"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    call_sid: Mapped[str] = mapped_column(String(34), index=True)
    event_id: Mapped[str] = mapped_column(String(80))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(24))
    data: Mapped[dict] = mapped_column(JSON)
