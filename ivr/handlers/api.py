"""The ops API (JSON, bearer token)."""

from __future__ import annotations

import hmac
import re
from datetime import UTC, datetime

import phonenumbers
from flask import Blueprint, abort, current_app, jsonify, request
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from ivr.handlers.jsonapi import MAX_TICKET_ID, json_object, on_call, redis_unavailable
from ivr.queues.callbacks import STATUSES as CALLBACK_STATUSES
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


bp.register_error_handler(RedisError, redis_unavailable)


@bp.errorhandler(400)
@bp.errorhandler(401)
@bp.errorhandler(404)
@bp.errorhandler(409)
def json_error(error):
    return jsonify(error=error.description), error.code


@bp.app_errorhandler(404)
@bp.app_errorhandler(405)
def json_outside_routes(error):
    """A URL under /api/ that matches no route still answers in JSON (ops scripts parse it)."""
    if request.path == "/api" or request.path.startswith("/api/"):
        return jsonify(error=f"no such endpoint: {request.method} {request.path}"), error.code
    return error


@bp.get("/tickets")
def list_tickets():
    """Tickets filtered by call_sid, caller (E.164 or national) and since (ISO 8601)."""
    _only_args("call_sid", "caller", "since", "limit")
    limit = _int_arg("limit", 50, 1, 500)
    tickets = services().store.find(
        call_sid=request.args.get("call_sid") or None,
        caller=_caller_arg(),
        since=_since_arg(),
        limit=limit,
    )
    return jsonify(tickets=[ticket_json(t) for t in tickets], count=len(tickets))


@bp.get("/tickets/<ticket_id>")
def get_ticket(ticket_id: str):
    """One ticket by id (the reference callers are told)."""
    if not (ticket_id.isascii() and ticket_id.isdigit()):
        abort(404, description=f"no ticket {ticket_id!r}: a ticket id is a number (the reference callers are told)")
    number = int(ticket_id)
    ticket = services().store.get(number) if number <= MAX_TICKET_ID else None
    if ticket is None:
        abort(404, description=f"no ticket {number}")
    return jsonify(ticket_json(ticket))


def _only_args(*known: str) -> None:
    """A filter ops mistype (`?calller=…`) must not quietly answer with everything."""
    unknown = sorted(set(request.args) - set(known))
    if unknown:
        abort(400, description=f"unknown parameter(s) {', '.join(unknown)}; this endpoint takes {', '.join(known)}")
    # Nor one given twice (`?status=done&status=failed`): one value each, not the first quietly.
    twice = sorted(name for name in request.args if len(request.args.getlist(name)) > 1)
    if twice:
        abort(400, description=f"parameter(s) {', '.join(twice)} given more than once: one value each")
    # Nor one left empty (`?call_sid=$SID` with SID unset): leave it out to mean "any".
    empty = sorted(name for name in request.args if not request.args[name].strip())
    if empty:
        abort(400, description=f"empty parameter(s) {', '.join(empty)}: give a value or leave it out")


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    # isdigit alone admits "²" and other digits int() refuses.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(high)) or not low <= int(raw) <= high:
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


_UNENCODED_PLUS = re.compile(r"(?<=\d) (\d\d(?::?\d\d)?)$")


def _since_arg() -> datetime | None:
    raw = request.args.get("since")
    if not raw:
        return None
    # A '+' left unencoded in a query string arrives as a space: "…T09:00:00 09:00" meant +09:00.
    raw = _UNENCODED_PLUS.sub(r"+\1", raw.strip())
    try:
        since = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        abort(400, description="since must be an ISO 8601 time, e.g. 2026-11-22T09:00:00%2B09:00 (+ encoded as %2B)")
    # Without a zone, the hotline's own: ops read the hotline's clock (as the simulator's --at).
    return since if since.tzinfo else since.replace(tzinfo=services().config.current().hours.zone)


@bp.get("/agents")
def list_agents():
    """Agents from config with their live status."""
    hotline = services()
    live = hotline.routing.agents()
    agents = []
    for agent in hotline.config.current().config.agents:
        status, since_ms, call_sid = live.get(agent.id, ("offline", 0, None))
        agents.append(
            {
                "id": agent.id,
                "name": agent.name,
                "skills": agent.skills,
                "languages": agent.languages,
                "status": status,
                "since": _iso_ms(since_ms),
                "call_sid": call_sid,
            }
        )
    return jsonify(agents=agents)


@bp.post("/agents/<agent_id>/status")
def set_agent_status(agent_id: str):
    """An agent (or ops) sets available, away or offline; busy and wrap-up follow calls."""
    from ivr.queues.state import SETTABLE

    hotline = services()
    if not any(a.id == agent_id for a in hotline.config.current().config.agents):
        abort(404, description=f"no agent {agent_id!r} in the config")
    body = json_object()
    status = body.get("status") or request.form.get("status")
    if status not in SETTABLE:
        abort(400, description=f"status must be one of {', '.join(SETTABLE)}")
    if "force" in body and not isinstance(body["force"], bool):
        abort(400, description='"force" must be true or false')
    holding = on_call(hotline.routing, agent_id, int(hotline.clock().timestamp() * 1000))
    if holding and body.get("force") is not True:
        abort(409, description=f'agent {agent_id} is on a call ({holding}); "force": true overrides a stuck status')
    hotline.routing.set_agent_status(agent_id, status, int(hotline.clock().timestamp() * 1000))
    return jsonify(id=agent_id, status=status)


@bp.get("/queues")
def list_queues():
    """Each queue: callers waiting (per language), the longest wait, agents staffed and busy, its
    open callbacks."""
    from ivr.queues.lines import agent_lines

    hotline = services()
    config = hotline.config.current().config
    now_ms = int(hotline.clock().timestamp() * 1000)
    live = hotline.routing.agents()
    lines = agent_lines(config)
    open_callbacks = hotline.callbacks.open_counts()
    out = []
    for name, queue in config.queues.items():
        langs = list(queue.languages or config.languages)
        waiting = hotline.routing.waiting(name, langs)
        heads = [head for _, head in waiting.values() if head is not None]
        serving = [a for a, own in lines.items() if any(q == name for q, _, _ in own)]
        statuses = [live.get(a, ("offline", 0, None))[0] for a in serving]
        out.append(
            {
                "queue": name,
                "waiting": sum(size for size, _ in waiting.values()),
                "waiting_by_language": {lang: size for lang, (size, _) in waiting.items()},
                "longest_wait_s": round((now_ms - min(heads)) / 1000) if heads else 0,
                "agents_staffed": sum(s not in ("away", "offline") for s in statuses),
                "agents_busy": sum(s in ("reserved", "busy", "wrap_up") for s in statuses),
                "priority": queue.priority,
                # Pending callbacks are in `waiting` too: they hold a seat in the line.
                "callbacks": {
                    status: open_callbacks.get((name, status), 0) for status in ("pending", "scheduled", "dialling")
                },
                "estimate_for_a_new_caller": {lang: _estimate_json(name, lang) for lang in langs},
            }
        )
    return jsonify(queues=out)


def _estimate_json(queue: str, lang: str) -> dict:
    """What a caller joining (queue, lang) now would be told."""
    from ivr.queues.live import estimate_for

    hotline = services()
    config = hotline.config.current().config
    current = estimate_for(hotline.routing, config, None, queue, lang, hotline.clock().timestamp())
    estimate, spoken = current.estimate, current.spoken

    def seconds(value: float) -> int | None:
        return round(value) if value != float("inf") else None

    return {
        "status": estimate.status,
        "point_s": seconds(estimate.point_s),
        "lo_s": seconds(estimate.lo_s),
        "hi_s": seconds(estimate.hi_s),
        "spoken": {"kind": spoken.kind, "lo_min": spoken.lo_min, "hi_min": spoken.hi_min},
    }


def _iso_ms(ms: int) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else None


@bp.get("/callbacks")
def list_callbacks():
    """Callbacks, newest first: ?status=pending|scheduled|dialling|done|failed|cancelled&queue=…"""
    _only_args("status", "queue", "limit")
    status = request.args.get("status") or None
    if status is not None and status not in CALLBACK_STATUSES:
        abort(400, description=f"status must be one of {', '.join(CALLBACK_STATUSES)}")
    queue = request.args.get("queue") or None
    if queue is not None and queue not in services().config.current().config.queues:
        abort(400, description=f"unknown queue {queue!r}")
    book = services().callbacks
    now_ms = int(services().clock().timestamp() * 1000)
    found = book.listing(status=status, queue=queue, limit=_int_arg("limit", 100, 1, 1000), now_ms=now_ms)
    return jsonify(callbacks=[_callback_json(book, c) for c in found], count=len(found))


@bp.get("/callbacks/<callback_id>")
def get_callback(callback_id: str):
    """One callback by id, as the listing shows it."""
    book = services().callbacks
    callback = book.get(callback_id)
    if callback is None:
        abort(404, description=f"no callback {callback_id}")
    return jsonify(_callback_json(book, callback))


@bp.post("/callbacks/<callback_id>/cancel")
def cancel_callback(callback_id: str):
    """Cancel a pending or scheduled callback; 409 once it is being dialled or is over."""
    result = services().callback_desk().cancel(callback_id, "ops")
    if result == "unknown":
        abort(404, description=f"no callback {callback_id}")
    if result == "dialling":
        abort(409, description="the callback is being dialled right now")
    if result == "closed":
        abort(409, description="the callback is already over")
    callback = services().callbacks.get(callback_id)
    return jsonify(_callback_json(services().callbacks, callback))


def _callback_json(book, callback) -> dict:  # noqa: ANN001
    def iso(ms: int | None) -> str | None:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else None

    return {
        "id": callback.id,
        "status": callback.status,
        "number": callback.number,
        "call_sid": callback.call_sid,
        "reference": callback.reference,
        "queue": callback.queue,
        "language": callback.lang,
        "branch": callback.branch,
        "arrived_at": iso(callback.arrived_ms),
        "requested_at": iso(callback.requested_ms),
        "scheduled_for": iso(callback.scheduled_ms),
        "position": book.position(callback) if callback.status == "pending" else None,
        "agent": callback.agent,
        "attempts": callback.attempts,
        "reason": callback.reason,
        "sms_sent": callback.sms_sent_ms is not None,
        "sms_sent_at": iso(callback.sms_sent_ms),
        "updated_at": iso(callback.updated_ms),
    }
