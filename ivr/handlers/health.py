"""GET /healthz: is this process able to serve calls (config, Redis) and write tickets (database).
GET /livez: is it answering at all — what a load balancer should probe (a Redis blip fails
/healthz on every host at once, while callers are still served: see the README)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from ivr.services import services
from ivr.settings import dial_settings_missing

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    hotline = services()
    plan = hotline.config.current()
    checks: dict[str, object] = {"config": plan.version}
    missing = dial_settings_missing(current_app.config)
    if missing and plan.config.callbacks.enabled:
        # Callbacks are still booked (they keep their places) but none is dialled until then.
        checks["dialling"] = f"unavailable: {', '.join(missing)} unset"
    if hotline.config.refused:
        checks["config_refused"] = hotline.config.refused  # a publish that did not go live, and why
    try:
        hotline.redis.ping()
        checks["redis"] = "ok"
        paused = hotline.callbacks.dialling_paused()
        if paused is not None and "dialling" not in checks:
            checks["dialling"] = f"paused for {paused[1]} s more: {paused[0]}"
    except RedisError as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    try:
        hotline.store.ping()
        checks["database"] = "ok"
    except SQLAlchemyError as exc:
        # Calls are still answered without the database (tickets wait in Redis), so this alone
        # does not fail the check.
        checks["database"] = f"unavailable: {type(exc).__name__}"
    healthy = checks["redis"] == "ok"
    return jsonify(status="ok" if healthy else "degraded", **checks), 200 if healthy else 503


@bp.get("/livez")
def livez():
    """The process answers: touches neither Redis nor the database."""
    return jsonify(status="ok")
