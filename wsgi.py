"""WSGI entry point: `gunicorn wsgi:app`."""

from ivr import create_app

app = create_app()
