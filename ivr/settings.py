"""Settings from the environment (secrets and wiring) - never from the YAML config."""

from __future__ import annotations

import os
from collections.abc import Mapping

ENV_KEYS = (
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_CALLER_ID",
    "PUBLIC_BASE_URL",
    "REDIS_URL",
    "DATABASE_URL",
    "HOTLINE_CONFIG",
    "OPS_API_TOKEN",
    "AGENT_TOKEN_SECRET",
    "TWILIO_API_BASE_URL",
)

DEFAULTS: dict[str, object] = {
    "HOTLINE_CONFIG": "config/hotline.yaml",
    # Seconds between checks of the config file for a change (hot reload); 0 disables it.
    "CONFIG_RELOAD_INTERVAL_S": 2.0,
    # Twilio's webhook forms are a few hundred bytes; anything near this is not Twilio.
    "MAX_CONTENT_LENGTH": 32 * 1024,
    # How long a call's event log stays in Redis (tickets are synced long before).
    "CALL_LOG_TTL_S": 7 * 24 * 3600,
    # Injected clock (tests): a callable returning an aware UTC datetime.
    "CLOCK": None,
    # Injected sleep (tests): how the callback dialler waits for its pacing slot.
    "SLEEP": None,
    # Where the Twilio REST client sends requests (a local fake Twilio in benchmarks); unset: Twilio.
    "TWILIO_API_BASE_URL": None,
}


class SettingsError(RuntimeError):
    pass


def read_settings(environ: Mapping[str, str], overrides: Mapping[str, object] | None) -> dict:
    settings = dict(DEFAULTS)
    settings.update({k: environ[k] for k in ENV_KEYS if environ.get(k)})
    settings.update(overrides or {})
    missing = [k for k in ("TWILIO_AUTH_TOKEN", "REDIS_URL") if not settings.get(k)]
    if missing:
        raise SettingsError(
            f"missing setting(s) {', '.join(missing)}: set them in the environment "
            "(`make run` starts a local Redis and a development token for you)"
        )
    base = settings.get("PUBLIC_BASE_URL")
    if base and not str(base).startswith(("https://", "http://")):
        raise SettingsError(f"PUBLIC_BASE_URL must be an origin like https://hotline.example.com, got {base!r}")
    return settings


def default_database_url(instance_path: str) -> str:
    os.makedirs(instance_path, exist_ok=True)
    return f"sqlite:///{os.path.join(instance_path, 'hotline.db')}"


# What an outbound call needs (the REST account, its From, absolute webhook URLs).
DIAL_SETTINGS = ("TWILIO_ACCOUNT_SID", "TWILIO_CALLER_ID", "PUBLIC_BASE_URL")


def dial_settings_missing(settings: Mapping[str, object]) -> list[str]:
    """The settings an outbound call needs that `settings` (an app's config) lacks."""
    return [name for name in DIAL_SETTINGS if not settings.get(name)]
