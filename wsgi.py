"""WSGI entry point: `gunicorn wsgi:app`."""

import gc

from ivr import create_app

app = create_app()
# What start-up built (modules, the config model, the Flask app) lives as long as the worker.
# Frozen, the cyclic collector never scans it again: a full collection over those ~110,000
# objects took ~50 ms, a pause some webhook would wait through.
gc.collect()
gc.freeze()
