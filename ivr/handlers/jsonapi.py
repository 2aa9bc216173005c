"""What the two JSON APIs (ops and agent console) share: reading a JSON body, and answering
when a dependency is down."""

from __future__ import annotations

from flask import abort, jsonify, request

# Ticket ids are BIGINT on PostgreSQL: a larger id is no ticket (a 404), not a database error.
MAX_TICKET_ID = 2**63 - 1


def json_object() -> dict:
    """The request's JSON body as an object; {} when there is none (a form post); 400 when the
    JSON is something else (a list, a string, a number)."""
    body = request.get_json(silent=True)
    if body is None:
        return {}
    if not isinstance(body, dict):
        abort(400, description='send a JSON object, e.g. {"status": "available"}')
    return body


def redis_unavailable(_error: Exception):
    """Live state (agents, queues, callbacks) is in Redis: while it is down, say so and when."""
    return jsonify(error="live routing state (Redis) is unavailable; try again shortly"), 503
