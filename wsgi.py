"""WSGI entry point: `gunicorn wsgi:app` (and the app of `flask --app wsgi hotline …`)."""

import gc
import sys

from ivr import create_app
from ivr.menus.loader import ConfigError
from ivr.settings import SettingsError

try:
    app = create_app()
except (SettingsError, ConfigError) as refused:
    if "gunicorn" in sys.modules:
        # gunicorn halts on an exception while a worker boots ("Worker failed to boot"); a
        # SystemExit would have it start the worker again, and again, forever.
        raise
    # The flask CLI: the reason alone, not a traceback ending in it.
    print(f"hotline: {refused}", file=sys.stderr)
    raise SystemExit(2) from None
# What start-up built (modules, the config model, the Flask app) lives as long as the worker.
# Frozen, the cyclic collector never scans it again: a full collection over those ~110,000
# objects took ~50 ms, a pause some webhook would wait through.
gc.collect()
gc.freeze()
