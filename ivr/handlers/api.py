"""The ops API (JSON, bearer token)."""

from __future__ import annotations

import hmac
from datetime import UTC, datetime

import phonenumbers
from flask import Blueprint, abort, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError

from ivr.services import services
from ivr.tickets.store import ticket_json

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.before_request
def require_token():
    expected = current_app.config.get("OPS_API_TOKEN")
    header = request.headers.get("Authorization", "")
    given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    if not expected or not given or not hmac.compare_digest(given.encode(), str(expected).encode()):
        abort(401, description="send Authorization: Bearer <OPS_API_TOKEN>")


@bp.errorhandler(SQLAlchemyError)
def database_unavailable(_error):
    return jsonify(error="the ticket database is unavailable; try again shortly"), 503


@bp.errorhandler(400)
@bp.errorhandler(401)
@bp.errorhandler(404)
def json_error(error):
    return jsonify(error=error.description), error.code


@bp.get("/tickets")
def list_tickets():
    """Tickets filtered by call_sid, caller (E.164 or national) and since (ISO 8601)."""
    limit = _int_arg("limit", 50, 1, 500)
    tickets = services().store.find(
        call_sid=request.args.get("call_sid") or None,
        caller=_caller_arg(),
        since=_since_arg(),
        limit=limit,
    )
    return jsonify(tickets=[ticket_json(t) for t in tickets], count=len(tickets))


@bp.get("/tickets/<int:ticket_id>")
def get_ticket(ticket_id: int):
    """One ticket by id (the reference callers are told)."""
    ticket = services().store.get(ticket_id)
    if ticket is None:
        abort(404, description=f"no ticket {ticket_id}")
    return jsonify(ticket_json(ticket))


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        abort(400, description=f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def _caller_arg() -> str | None:
    raw = request.args.get("caller")
    if not raw:
        return None
    plan = services().config.current()
    region = plan.config.hours.public_holidays.country if plan.config.hours.public_holidays else None
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return raw  # callers may be 'anonymous' or a client: identity; match as given
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _since_arg() -> datetime | None:
    raw = request.args.get("since")
    if not raw:
        return None
    try:
        since = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        abort(400, description="since must be an ISO 8601 time, e.g. 2026-11-22T09:00:00+09:00")
    return since if since.tzinfo else since.replace(tzinfo=UTC)
