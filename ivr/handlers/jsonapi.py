"""What the two JSON APIs (ops and agent console) share: reading a JSON body, and answering
when a dependency is down."""

from __future__ import annotations

from flask import abort, jsonify, request

from ivr.queues.state import RoutingState

# Ticket ids are BIGINT on PostgreSQL: a larger id is no ticket (a 404), not a database error.
MAX_TICKET_ID = 2**63 - 1


def json_object() -> dict:
    """The request's JSON body as an object; {} when there is none (a form post); 400 when the
    JSON is something else (a list, a string, a number)."""
    body = request.get_json(silent=True)
    if body is None:
        keys = list(request.form) or ([request.get_data(as_text=True)] if not request.mimetype else [])
        if any(key.lstrip().startswith(("{", "[")) for key in keys):
            # `curl -d '{"status": "away"}'` sends JSON as a form: say so, not "status must be …".
            abort(400, description="that looks like JSON sent as a form: add the header Content-Type: application/json")
        return {}
    if not isinstance(body, dict):
        abort(400, description='send a JSON object, e.g. {"status": "available"}')
    return body


def redis_unavailable(_error: Exception):
    """Live state (agents, queues, callbacks) is in Redis: while it is down, say so and when."""
    return jsonify(error="live routing state (Redis) is unavailable; try again shortly"), 503


# No call holds an agent longer than this: Twilio ends calls after 4 hours unless told
# otherwise (TimeLimit), plus ringing and wrap-up. A status older than that is a lost end.
MAX_HELD_MS = (4 * 3600 + 15 * 60) * 1000


def on_call(routing: RoutingState, agent_id: str, now_ms: int) -> str | None:
    """The agent's status while a call holds them (reserved or busy, and that call not yet
    over), else None. A status set then would make the call's end read as a missed call (the
    caller queued again after talking), so it waits until the call ends. A call whose end was
    lost (Redis was down for it) does not hold the agent: its final status was seen, or the
    status is older than any call can last."""
    current = routing.agents().get(agent_id)
    if current is None or current[0] not in ("reserved", "busy"):
        return None
    status, since_ms, call_sid = current
    if now_ms - since_ms > MAX_HELD_MS or (call_sid and routing.gone(call_sid)):
        return None
    return status
