# Gunicorn settings for the hotline's web process (see BENCHMARKS.md for the measurements).
#
# A webhook is ~0.5 ms of Python plus one Redis round trip, so the GIL, not I/O, is the limit:
# one thread per worker, about two workers per core. gthread (not sync) keeps Twilio's keep-alive
# connections. A gthread worker accepts every connection it can, and with few busy clients one
# worker ended up holding most of them (one core busy, the other idle, p99 tripled); capping
# connections per worker leaves the rest in the listen backlog, where whichever worker is free
# takes them. Idle keep-alive connections are closed after 2 s so they don't hold those slots.
import multiprocessing
import os

bind = os.environ.get("GUNICORN_BIND", f"0.0.0.0:{os.environ.get('PORT', '5000')}")
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2))
threads = int(os.environ.get("GUNICORN_THREADS", "1"))
worker_class = "gthread"
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "4"))
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "2"))
# Twilio gives up on a webhook after 15 s; a request still running then is of no use to anyone.
timeout = 15
graceful_timeout = 20
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG") else None
# gunicorn's control socket (`gunicornc`) lives at one path per user (~/.gunicorn/gunicorn.ctl):
# two hotlines on one host (a dev run next to another, staging beside production) would take it
# from each other. Off unless a path is given.
control_socket_disable = not os.environ.get("GUNICORN_CONTROL_SOCKET")
if os.environ.get("GUNICORN_CONTROL_SOCKET"):
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]
