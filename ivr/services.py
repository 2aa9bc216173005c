"""The app's wiring: one `Services` per app, built by the factory, found via `services()`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Flask, current_app
from redis import Redis
from redis.client import Pipeline
from rq import Queue
from twilio.rest import Client

from ivr.calllog import CallLog
from ivr.forksafe import protect
from ivr.menus.runtime import ConfigHolder, Plan
from ivr.queues.callback_desk import CallbackDesk
from ivr.queues.callbacks import Callback, CallbackBook
from ivr.queues.state import RoutingState
from ivr.roundtrip import RoundTrip
from ivr.tickets.store import TicketStore

TICKETS_QUEUE = "tickets"
ROUTING_QUEUE = "routing"  # connecting agents: listened to first, it keeps callers waiting
CALLBACKS_QUEUE = "callbacks"  # seating, dialling and texting callbacks: after routing, before tickets


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Services:
    redis: Redis
    calls: CallLog
    config: ConfigHolder
    store: TicketStore
    tickets_queue: Queue
    clock: Callable[[], datetime]
    routing: RoutingState
    routing_queue: Queue
    callbacks_queue: Queue
    callbacks: CallbackBook
    sleep: Callable[[float], None]
    _twilio: Client | None = None

    @classmethod
    def build(cls, app: Flask) -> Services:
        # Neither Redis nor the database is contacted here: both connect on first use.
        settings = app.config
        redis = Redis.from_url(
            settings["REDIS_URL"], socket_timeout=2, socket_connect_timeout=2, health_check_interval=30
        )
        protect(redis.connection_pool)  # the worker forks while its dispatcher thread uses it
        roundtrip = RoundTrip(redis)  # one kept connection per thread for the webhooks
        return cls(
            redis=redis,
            calls=CallLog(redis, settings["CALL_LOG_TTL_S"], roundtrip),
            config=ConfigHolder(settings["HOTLINE_CONFIG"], settings["CONFIG_RELOAD_INTERVAL_S"]),
            store=TicketStore(settings["DATABASE_URL"]),
            tickets_queue=Queue(TICKETS_QUEUE, connection=redis),
            clock=settings["CLOCK"] or utc_now,
            routing=RoutingState(redis, roundtrip),
            routing_queue=Queue(ROUTING_QUEUE, connection=redis),
            callbacks_queue=Queue(CALLBACKS_QUEUE, connection=redis),
            callbacks=CallbackBook(redis),
            sleep=settings["SLEEP"] if settings["SLEEP"] is not None else time.sleep,
        )

    def twilio_configured(self) -> bool:
        return bool(current_app.config.get("TWILIO_ACCOUNT_SID"))

    def twilio(self) -> Client:
        """The Twilio REST client (built on first use; only workers call Twilio)."""
        if self._twilio is None:
            sid = current_app.config.get("TWILIO_ACCOUNT_SID")
            if not sid:
                raise RuntimeError("TWILIO_ACCOUNT_SID is unset: routing needs Twilio's REST API")
            self._twilio = Client(sid, current_app.config["TWILIO_AUTH_TOKEN"])
            if current_app.config.get("TWILIO_API_BASE_URL"):
                # Benchmarks and the forked-worker test point the client at a local fake Twilio.
                self._twilio.api.base_url = current_app.config["TWILIO_API_BASE_URL"]
        return self._twilio

    def close(self) -> None:
        """Release connections (tests and CLI commands that build many apps)."""
        self.store.dispose()
        self.redis.close()

    def mark_ticket_due(self, call_sid: str, pipeline: Pipeline) -> None:
        from callbacks.tickets import mark_due

        mark_due(pipeline, call_sid)

    def request_ticket_sync(self, call_sid: str) -> None:
        """Queue a sync now (the CLI's resync); webhooks use mark_ticket_due."""
        from callbacks.tickets import enqueue_sync

        enqueue_sync(self.tickets_queue, call_sid)

    def schedule_callback(self, callback: Callback, when: datetime) -> None:
        from callbacks.dialer import schedule_seat

        schedule_seat(self.callbacks_queue, callback, when)

    def notify_callback_failed(self, callback: Callback, pipeline: Pipeline) -> None:
        """Queue the failure text in `pipeline` (the transaction that marks the callback failed)."""
        from callbacks.dialer import SMS_RETRY, send_failure_sms

        job = Queue.prepare_data(send_failure_sms, (callback.id,), retry=SMS_RETRY, result_ttl=0)
        self.callbacks_queue.enqueue_many([job], pipeline=pipeline)

    def callback_desk(self, plan: Plan | None = None, now: datetime | None = None) -> CallbackDesk:
        return CallbackDesk(
            plan or self.config.current(),
            self.callbacks,
            self.routing,
            self.calls,
            now or self.clock(),
            self.mark_ticket_due,
            self.schedule_callback,
            self.notify_callback_failed,
        )

    def dispatch_due_tickets(self) -> int:
        from callbacks.tickets import dispatch_due

        return dispatch_due(self.redis, self.tickets_queue)


def services() -> Services:
    return current_app.extensions["hotline"]
