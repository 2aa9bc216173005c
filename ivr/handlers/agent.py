"""The agent console: a page (`/agent`) and its JSON API. An agent signs in with their id and a
token derived from the server's secret (`flask --app wsgi hotline agent-token ID`), so no
password store is needed; every API call carries `Authorization: Bearer <id>:<token>`."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime

from flask import Blueprint, abort, current_app, jsonify, render_template, request
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from ivr.calllog import make_event
from ivr.handlers.jsonapi import MAX_HELD_MS, json_object, on_call, redis_unavailable
from ivr.menus.model import Agent
from ivr.queues.callbacks import Callback, callback_id_of
from ivr.queues.state import SETTABLE
from ivr.services import services
from ivr.tickets.store import ticket_json
from ivr.tickets.summary import summarize

bp = Blueprint("agent", __name__, url_prefix="/agent", template_folder="templates")

DISPOSITIONS = ("resolved", "follow_up", "escalated", "refund_requested", "complaint_logged", "other")


def agent_token(secret: str, agent_id: str) -> str:
    return hmac.new(secret.encode(), f"agent:{agent_id}".encode(), hashlib.sha256).hexdigest()[:24]


def _secret() -> str:
    secret = current_app.config.get("AGENT_TOKEN_SECRET") or current_app.config.get("OPS_API_TOKEN")
    if not secret:
        abort(503, description="set AGENT_TOKEN_SECRET (or OPS_API_TOKEN) to enable agent sign-in")
    return secret


def signed_in_agent(finishing_a_call: bool = False) -> Agent:
    """The agent the request's token signs in. `finishing_a_call`: also one a reload removed from
    the config while a call holds them (reserved, busy, wrap-up), so they can see that call and
    save its wrap-up; once it is over, removal is what ends their sign-in."""
    header = request.headers.get("Authorization", "")
    agent_id, _, token = header.removeprefix("Bearer ").partition(":")
    agent = next((a for a in services().config.current().config.agents if a.id == agent_id), None)
    if agent is None and finishing_a_call and token:
        agent = _removed_agent_holding_a_call(agent_id)
    if agent is None or not token or not hmac.compare_digest(token.encode(), agent_token(_secret(), agent_id).encode()):
        abort(401, description="sign in with your agent id and token")
    return agent


def _removed_agent_holding_a_call(agent_id: str) -> Agent | None:
    hotline = services()
    status, since_ms, call_sid = hotline.routing.agents().get(agent_id, ("offline", 0, None))
    now_ms = int(hotline.clock().timestamp() * 1000)
    holding = status == "wrap_up" or on_call(hotline.routing, agent_id, now_ms) is not None
    if not (call_sid and holding and now_ms - since_ms <= MAX_HELD_MS):
        return None
    # Not in the config any more: only its id is known (no phone, skills or languages to route by).
    return Agent.model_construct(id=agent_id, name=agent_id, phone=None, client=None, skills={}, languages=[])


@bp.errorhandler(400)
@bp.errorhandler(401)
@bp.errorhandler(403)
@bp.errorhandler(409)
@bp.errorhandler(503)
def json_error(error):
    return jsonify(error=error.description), error.code


bp.register_error_handler(RedisError, redis_unavailable)


@bp.get("")
def page():
    """The console page; it signs in and polls the API."""
    return render_template("agent.html", dispositions=DISPOSITIONS)


@bp.get("/api/me")
def me():
    """The agent, their status, and the caller being connected to them (the screen pop)."""
    agent = signed_in_agent(finishing_a_call=True)
    hotline = services()
    status, since_ms, call_sid = hotline.routing.agents().get(agent.id, ("offline", 0, None))
    return jsonify(
        id=agent.id,
        name=agent.name,
        # False: a reload removed this agent; the call they hold is theirs to finish, no more.
        on_roster=any(a.id == agent.id for a in hotline.config.current().config.agents),
        status=status,
        since=datetime.fromtimestamp(since_ms / 1000, UTC).isoformat() if since_ms else None,
        call=screen_pop(call_sid) if call_sid and status in ("reserved", "busy", "wrap_up") else None,
        dispositions=DISPOSITIONS,
    )


def screen_pop(call_sid: str) -> dict:
    hotline = services()
    now = hotline.clock()
    own_events = [] if callback_id_of(call_sid) else hotline.calls.events(call_sid)
    callback = callback_of(call_sid, own_events)
    # A callback: why the customer called is on the call that asked for it, and they have waited
    # for us since they asked (the call we placed has no menu path and no queue of its own).
    summary = summarize(hotline.calls.events(callback.call_sid) if callback else own_events)
    block = summary["queue"] or {}
    entered = block.get("entered_at")
    waited = block.get("wait_s")
    if callback is not None:
        waited = max(0, round(now.timestamp() - callback.requested_ms / 1000))
    elif waited is None and entered:
        waited = round((now - datetime.fromisoformat(entered)).total_seconds())
    earlier, history_error = [], None
    if summary["caller"]:
        try:
            earlier = [
                {k: t[k] for k in ("id", "started_at", "branch", "outcome")}
                for t in map(ticket_json, hotline.store.find(caller=summary["caller"], limit=6))
                if t["call_sid"] != call_sid
            ][:5]
        except SQLAlchemyError:
            history_error = "earlier tickets are unavailable right now"
    return {
        "call_sid": call_sid,
        "reference": (callback.reference if callback else None) or hotline.calls.reference(call_sid),
        "caller": summary["caller"],
        "language": summary["language"],
        "language_name": getattr(
            hotline.config.current().config.languages.get(summary["language"] or ""), "name", None
        ),
        "branch": summary["branch"],
        "path": [step["node"] for step in summary["path"]],
        "queue": callback.queue if callback else block.get("queue"),
        "waited_s": waited,
        "callback": None
        if callback is None
        else {
            "id": callback.id,
            "number": callback.number,
            "requested_at": datetime.fromtimestamp(callback.requested_ms / 1000, UTC).isoformat(),
            "attempt": len(callback.attempts),
        },
        "earlier_tickets": earlier,
        "earlier_tickets_error": history_error,
    }


def callback_of(call_sid: str, events: list[dict]) -> Callback | None:
    """The callback an agent holds: `cb:<id>` (reserved for it; agent first, all along), or the
    call we placed, whose start event names it (its seat would not: gone in wrap-up)."""
    callback_id = callback_id_of(call_sid)
    if callback_id is None:
        start = next((e for e in events if e.get("kind") == "call"), {})
        callback_id = start.get("callback_id")
    return services().callbacks.get(callback_id) if callback_id else None


def _ticket_of_a_call_taken_by(agent_id: str, call_sid: str) -> str | None:
    """The call whose ticket gets this agent's disposition, None when they did not take it.
    Agent first, the agent's screen holds `cb:<id>` all along (no call of ours has that sid):
    taken if they are on it (busy, wrap-up) or talked to the customer, and the disposition goes
    onto the ticket of the call that asked for the callback."""
    hotline = services()
    callback_id = callback_id_of(call_sid)
    if callback_id is None:
        accepted = any(
            e["kind"] == "agent_accepted" and e.get("agent") == agent_id for e in hotline.calls.events(call_sid)
        )
        return call_sid if accepted else None
    callback = hotline.callbacks.get(callback_id)
    if callback is None:
        return None
    status, _, holding = hotline.routing.agents().get(agent_id, ("offline", 0, None))
    if holding == call_sid and status in ("busy", "wrap_up"):
        return callback.call_sid
    talked = any(
        e["kind"] == "callback_taken" and e.get("agent") == agent_id for e in hotline.calls.events(callback.call_sid)
    )
    return callback.call_sid if talked else None


@bp.post("/api/status")
def set_status():
    """Available, away or offline (busy and wrap-up follow calls)."""
    agent = signed_in_agent()
    hotline = services()
    status = json_object().get("status")
    if status not in SETTABLE:
        abort(400, description=f"status must be one of {', '.join(SETTABLE)}")
    holding = on_call(hotline.routing, agent.id, int(hotline.clock().timestamp() * 1000))
    if holding:
        abort(409, description=f"you are on a call ({holding}): set your status once it ends")
    hotline.routing.set_agent_status(agent.id, status, int(hotline.clock().timestamp() * 1000))
    return jsonify(id=agent.id, status=status)


@bp.post("/api/disposition")
def disposition():
    """Wrap-up notes and a disposition for a call this agent took, saved onto its ticket."""
    agent = signed_in_agent(finishing_a_call=True)
    hotline = services()
    body = json_object()
    call_sid, value = str(body.get("call_sid", "")), body.get("disposition")
    if not call_sid:
        abort(400, description="call_sid is required: the screen pop's call_sid")
    notes = str(body.get("notes", ""))[:4000]
    if value not in DISPOSITIONS:
        abort(400, description=f"disposition must be one of {', '.join(DISPOSITIONS)}")
    target = _ticket_of_a_call_taken_by(agent.id, call_sid)
    if target is None:
        abort(403, description="you can only wrap up calls you took")
    event = make_event("disposition", hotline.clock(), agent=agent.id, disposition=value, notes=notes)
    hotline.calls.append(target, [event], also=lambda pipe: hotline.mark_ticket_due(target, pipe))
    return jsonify(call_sid=call_sid, disposition=value, saved=True)
