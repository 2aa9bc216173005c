# Gunicorn settings for the hotline's web process. Webhooks are short and mostly CPU (TwiML) plus
# one Redis round trip, so a few threads per worker cover Redis latency without many processes.
import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '5000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
# Twilio gives up on a webhook after 15 s; a request still running then is of no use to anyone.
timeout = 15
graceful_timeout = 20
keepalive = 5
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG") else None
