"""What happens next on a call: the IVR's decisions, separate from HTTP and from TwiML layout.

Everything a decision needs arrives in the (signed) webhook URL and form: language, node,
attempt number, the key or words. So a webhook costs no Redis read; its only I/O is one
pipelined append of the events that tell the ticket's story (`CallLog.append`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from redis.client import Pipeline
from redis.exceptions import RedisError
from twilio.twiml.voice_response import VoiceResponse

from ivr.calllog import CallLog, RetryNames, make_event, utc_iso
from ivr.formvalues import bounded_int, whole_seconds
from ivr.hours import describe_opening, say_time
from ivr.menus import render
from ivr.menus.counts import Count
from ivr.menus.model import (
    HangupNode,
    InfoNode,
    MenuNode,
    Node,
    Option,
    QueueConfig,
    RecordNode,
    TransferNode,
)
from ivr.menus.runtime import Plan
from ivr.privacy import mask_number
from ivr.queues.callbacks import BY_CALLER, BY_NUMBER, CallbackBook
from ivr.queues.estimator import may_run_past
from ivr.queues.live import CallerEstimate, estimate_for
from ivr.queues.state import RoutingState, Seat

if TYPE_CHECKING:
    from ivr.menus.callback_flow import CallbackFlow, Schedule

log = logging.getLogger(__name__)

# Documents per config version: languages x nodes x attempts x preambles is a few thousand.
_MAX_CACHED_DOCUMENTS = 20_000
# Twilio numbers a call's status callbacks 0, 1, 2, …: a handful per call.
_MOST_SEQUENCE = 1_000_000
TERMINAL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
# Queue results after which the call is over (or bridged): nothing more to say.
_QUEUE_DONE = frozenset({"bridged", "bridging-in-process", "hangup", "redirected", "redirected-from-bridged"})


@dataclass(frozen=True)
class Call:
    """The parts of a Twilio webhook form the flow uses."""

    sid: str
    caller: str
    called: str
    status: str
    digits: str | None = None
    speech: str | None = None

    @classmethod
    def from_form(cls, form) -> Call:  # noqa: ANN001 - a werkzeug MultiDict
        speech = (form.get("SpeechResult") or "").strip()
        return cls(
            sid=form.get("CallSid", ""),
            caller=form.get("From") or form.get("Caller") or "",
            called=form.get("To") or form.get("Called") or "",
            status=form.get("CallStatus", ""),
            digits=form.get("Digits") or None,
            speech=speech[:500] or None,
        )


class Flow:
    def __init__(
        self,
        plan: Plan,
        calls: CallLog,
        urls: render.Urls,
        now: datetime,
        mark_due: Callable[[str, Pipeline], None],
        routing: RoutingState,
        callback_book: CallbackBook | None = None,
        schedule_callback: Schedule | None = None,
        retry: RetryNames | None = None,
        caller_id: str | None = None,
    ):
        self.callback_book = callback_book
        # Names this webhook's events after Twilio's retry token: a retry of it logs nothing twice.
        self.retry = retry or RetryNames(None)
        self.caller_id = caller_id  # TWILIO_CALLER_ID: the number our outbound calls come from
        self.schedule_callback = schedule_callback
        self.plan = plan
        self.config = plan.config
        self.calls = calls
        self.urls = urls
        self.now = now
        self.mark_due = mark_due
        self.routing = routing
        # Redis commands gathered while deciding, sent with the events in one round trip.
        self._ops: list[Callable[[Pipeline], None]] = []
        self.keys = plan.config.input.keys

    @property
    def callbacks(self) -> CallbackFlow:
        from ivr.menus.callback_flow import CallbackFlow

        assert self.callback_book is not None and self.schedule_callback is not None
        return CallbackFlow(self, self.callback_book, self.schedule_callback)

    @property
    def callbacks_on(self) -> bool:
        """Callbacks may be offered (and new ones booked)."""
        return self.config.callbacks.enabled and self.callback_book is not None

    @property
    def callbacks_kept(self) -> bool:
        """Callbacks already promised are honoured: booked ones are still made (the router does
        not look at `enabled`), so their callers still hear of them and may cancel, and a caller
        who took the offer before ops turned callbacks off finishes booking."""
        return self.callback_book is not None

    @property
    def callback_key(self) -> str | None:
        return self.config.callbacks.key if self.callbacks_on else None

    # ----- start and language -------------------------------------------------------------

    def incoming(self, call: Call) -> VoiceResponse:
        start = make_event("call", self.now, event_id="start", caller=call.caller, called=call.called)
        pending_id = None
        try:
            # The same round trip asks whether this number has a callback pending (to it, or
            # asked for from it to another number).
            def also(pipe: Pipeline) -> None:
                pipe.hget(BY_NUMBER, call.caller)
                pipe.hget(BY_CALLER, call.caller)

            wanted = self.callbacks_kept and bool(call.caller)
            _, extra = self.calls.start_with(call.sid, start, also if wanted else None)
            pending_id = next((found for found in extra if found is not None), None)
        except RedisError:
            log.warning("call %s: Redis unavailable, this call's ticket will lack its start", call.sid)
        log.info("call %s from %s", call.sid, mask_number(call.caller))
        if pending_id is not None:
            pending = self.callback_book.get(pending_id.decode())
            if pending is not None and pending.status in ("pending", "scheduled"):
                return self.callbacks.pending_notice(call, pending)
        default, lang = self.plan.language(None)
        greeting = self.config.prompts.greeting[default]
        if len(self.config.languages) == 1:
            return self._enter(call, default, self.config.menu.root, [greeting])
        return self._memo(
            ("language", 1, greeting), lambda: render.language_menu(self.config, self.urls, 1, [(greeting, lang)])
        )

    def main_menu(self, call: Call, preamble: list[str], lang_id: str) -> VoiceResponse:
        """The main menu in lang_id, after `preamble`: for a caller who has shown they follow
        that language (they answered a question asked in it)."""
        lang_id, _ = self.plan.language(lang_id)
        return self._enter(call, lang_id, self.config.menu.root, preamble)

    def start_menu(self, call: Call, preamble: list[str], lang_id: str) -> VoiceResponse:
        """The language menu (or the main menu with one language), after `preamble` in lang_id."""
        lang_id, lang = self.plan.language(lang_id)
        if len(self.config.languages) == 1:
            return self._enter(call, lang_id, self.config.menu.root, preamble)
        greeted = None if lang_id == self.config.default_language else lang_id  # greeted in it already
        return render.language_menu(self.config, self.urls, 1, [(text, lang) for text in preamble], greeted)

    def language_choice(self, call: Call, attempt: int, greeted: str | None = None) -> VoiceResponse:
        greeted = greeted if greeted in self.config.languages else None  # a path part: anything may come
        chosen = next((i for i, lang in self.config.languages.items() if lang.key == call.digits), None)
        if chosen:
            picked = make_event("input", self.now, node="language", input=call.digits, result="choice")
            # The greeting was in the default language (or in `greeted`); welcome everyone else in theirs.
            welcome = (
                [] if chosen == (greeted or self.config.default_language) else [self.config.prompts.greeting[chosen]]
            )
            return self._enter(call, chosen, self.config.menu.root, welcome, [picked, self._language_event(chosen)])
        if call.digits == self.keys.repeat and not any(lg.key == call.digits for lg in self.config.languages.values()):
            # The repeat key works here as in every menu: the choice again, no apology, no try used.
            self._log(call, [make_event("input", self.now, node="language", input="repeat_key", result="repeat")])
            return render.language_menu(self.config, self.urls, attempt, [], greeted)
        return self._language_retry(call, attempt, "invalid_option" if call.digits else "no_input", greeted)

    def language_silence(self, call: Call, attempt: int, greeted: str | None = None) -> VoiceResponse:
        return self._language_retry(call, attempt, "no_input", greeted if greeted in self.config.languages else None)

    def _language_retry(self, call: Call, attempt: int, reason: str, greeted: str | None = None) -> VoiceResponse:
        default, lang = self.plan.language(greeted)
        shown = "-" if reason == "no_input" else shown_keys(call.digits)
        event = make_event("input", self.now, node="language", input=shown, result=reason)
        if attempt >= self.config.input.max_attempts:
            # Rather than give up on the caller, carry on in the default (or greeted) language.
            return self._enter(call, default, self.config.menu.root, [], [event, self._language_event(default)])
        self._log(call, [event])
        # No language chosen yet: apologise in each, in its own voice.
        texts = getattr(self.config.prompts, reason)
        preamble = [(texts[lang_id], lang) for lang_id, lang in self.config.languages.items()]
        key = ("language", attempt + 1, reason, greeted)
        return self._memo(key, lambda: render.language_menu(self.config, self.urls, attempt + 1, preamble, greeted))

    def _language_event(self, lang_id: str) -> dict:
        return make_event("language", self.now, lang=lang_id)

    # ----- entering a node ----------------------------------------------------------------

    def enter(self, call: Call, lang_id: str, node_id: str) -> VoiceResponse:
        lang_id, _ = self.plan.language(lang_id)
        return self._enter(call, lang_id, node_id, [])

    def _enter(
        self, call: Call, lang_id: str, node_id: str, preamble: list[str], events: list[dict] | None = None
    ) -> VoiceResponse:
        events = list(events or [])
        node = self.plan.node(node_id)
        if node is None:
            return self._recover(call, lang_id, f"unknown node {node_id!r}", events)
        events.append(make_event("visit", self.now, node=node_id, lang=lang_id, branch=self.plan.branches.get(node_id)))
        twiml = self._render_entry(call, lang_id, node_id, node, preamble, events)
        self._log(call, events)
        return twiml

    def _render_entry(
        self, call: Call, lang_id: str, node_id: str, node: Node, preamble: list[str], events: list[dict]
    ) -> VoiceResponse:
        config, urls = self.config, self.urls
        if isinstance(node, MenuNode):
            return self._memo(
                ("menu", lang_id, node_id, 1, *preamble),
                lambda: render.menu(config, urls, lang_id, node_id, node, 1, preamble),
            )
        if isinstance(node, InfoNode):
            events.append(make_event("info", self.now, node=node_id))
            if node.next:
                message = " ".join([*preamble, node.message[lang_id]])
                key = ("info_then", lang_id, node_id, message)
                return self._memo(key, lambda: render.info_then(config, urls, lang_id, message, node.next))
            texts = [*preamble, node.message[lang_id]]
            return self._memo(
                ("info", lang_id, node_id, 1, *texts), lambda: render.info(config, urls, lang_id, node_id, texts, 1)
            )
        if isinstance(node, RecordNode):
            texts = [*preamble, node.prompt[lang_id]]
            return self._memo(
                ("record", lang_id, node_id, *texts),
                lambda: render.record(
                    config, urls, lang_id, node_id, texts, node.max_length_s, self._back_url(lang_id, node_id)
                ),
            )
        if isinstance(node, TransferNode):
            return self._transfer(call, lang_id, node_id, node, preamble, events)
        assert isinstance(node, HangupNode)
        events.append(make_event("goodbye", self.now, node=node_id))
        texts = [*preamble, node.message[lang_id]]
        return self._memo(("hangup", lang_id, *texts), lambda: render.speak_and_hang_up(config, lang_id, texts))

    def _transfer(
        self, call: Call, lang_id: str, node_id: str, node: TransferNode, preamble: list[str], events: list[dict]
    ) -> VoiceResponse | str:
        if self.plan.hours.is_open(self.now):
            return self._queue_caller(call, lang_id, node_id, node.queue, [*preamble, node.prompt[lang_id]], events)
        opening = self.plan.hours.next_opening(self.now)
        events.append(
            make_event("after_hours", self.now, node=node_id, queue=node.queue, opening=opening and utc_iso(opening))
        )
        texts = [*preamble, self._closed_text(lang_id)]
        offer = self.config.after_hours.message_node is not None
        return render.closed(self.config, self.urls, lang_id, node_id, texts, 1, offer, self.callback_key)

    def _queue_caller(
        self,
        call: Call,
        lang_id: str,
        node_id: str,
        queue: str,
        texts: list[str],
        events: list[dict],
        hops: int = 0,
        attempt: int = 1,
    ) -> VoiceResponse | str:
        """Before queuing: overflow when the line is full or too long, and the estimate first at
        peak, above the threshold, or when the wait may run past closing. `attempt` counts the
        caller's tries at the offers made here (a wrong key hears them again, attempt + 1)."""
        queue_config = self.config.queues[queue]
        try:
            ahead = estimate_for(self.routing, self.config, None, queue, lang_id, self.now.timestamp())
        except RedisError:
            ahead = None  # no estimate without Redis: queue as usual
        if ahead is None:
            return self._join(call, lang_id, node_id, queue, texts, events)
        estimate, overflow = ahead.estimate, queue_config.overflow
        too_long = overflow.max_wait_s is not None and estimate.known and estimate.point_s > overflow.max_wait_s
        if ahead.position > queue_config.max_size or too_long:
            events.append(make_event("overflow", self.now, queue=queue, reason="long" if too_long else "full"))
            if overflow.action == "queue" and overflow.queue and hops < len(self.config.queues):
                return self._queue_caller(call, lang_id, node_id, overflow.queue, texts, events, hops + 1, attempt)
            offer = self.config.after_hours.message_node is not None
            full = [*texts, self.config.prompts.queue_full[lang_id]]
            return render.closed(self.config, self.urls, lang_id, node_id, full, 1, offer, self.callback_key)
        closing = self.plan.hours.closing(self.now)
        past_closing = closing is not None and may_run_past(estimate, self.now.timestamp(), closing.timestamp())
        peak = self.config.peak
        at_peak = self.plan.hours.in_window(peak.windows, self.now)
        offer_callback = self.callbacks_on and (past_closing or self.callbacks.offered_at(estimate.hi_s))
        announce = at_peak or past_closing or not estimate.known or estimate.point_s > peak.announce_above_s
        if not (announce or offer_callback):
            return self._join(call, lang_id, node_id, queue, texts, events)
        announcement, _ = self._announcement(lang_id, queue_config, ahead, None, self.now.timestamp())
        if past_closing:
            local = closing.astimezone(self.plan.hours.zone)
            announcement.append(
                self.config.prompts.closing_soon[lang_id].format(time=say_time(local, self.config.languages[lang_id]))
            )
        events.append(self._estimate_event(ahead, said_time=True, before_queue=True))
        # What was just said, so the first hold turn does not say the same place and wait again.
        spoken = ahead.spoken
        note = {
            "at": self.now.timestamp(),
            "position": ahead.position,
            "spoken": [spoken.kind, spoken.lo_min, spoken.hi_min],
            "promised_at": self.now.timestamp(),
            "upper_s": spoken.upper_s,
            "before_queue": True,
        }
        self._ops.append(lambda pipe: self.routing.announce_before_queue_in(pipe, call.sid, note))
        message_key = self.config.after_hours.message_key if self.config.after_hours.message_node else None
        join_url = self.urls.join(lang_id, node_id, queue)
        callback_key = self.callback_key if offer_callback else None
        callback_offer = None
        if callback_key and past_closing:
            # Called back at their turn, or, if the line closes first, when it opens again.
            callback_offer = self.config.prompts.callback_offer_past_closing[lang_id].format(
                key=callback_key, opening=self._after_closing_text(lang_id, closing)
            )
        return render.announce_then_queue(
            self.config,
            self.urls,
            lang_id,
            node_id,
            [*texts, *announcement],
            message_key,
            join_url,
            callback_key,
            attempt,
            callback_offer,
        )

    def _after_closing_text(self, lang_id: str, closing: datetime) -> str:
        """The opening after today's closing, as said to the caller ("Monday at 9:00")."""
        opening = self.plan.hours.next_opening(closing)
        if opening is None:
            return "—"
        return describe_opening(opening, self.now, self.config.languages[lang_id])

    def join(self, call: Call, lang_id: str, node_id: str, queue: str | None) -> VoiceResponse | str:
        """The caller heard the estimate and stayed on the line: into the queue."""
        lang_id, _ = self.plan.language(lang_id)
        node = self.plan.node(node_id)
        if not isinstance(node, TransferNode):
            return self._recover(call, lang_id, f"join from a node that is not a transfer: {node_id!r}")
        queue = queue if queue in self.config.queues else node.queue
        # Only the offer's silence leads here (a Gather falling through): on the ticket's path,
        # so it shows the caller heard the wait and chose to stay.
        events: list[dict] = [self._input_event(node_id, node, "-", "stayed")]
        twiml = self._join(call, lang_id, node_id, queue, [], events)
        self._log(call, events)
        return twiml

    def _join(
        self,
        call: Call,
        lang_id: str,
        node_id: str,
        queue: str,
        texts: list[str],
        events: list[dict],
        arrived_ms: int | None = None,
    ) -> VoiceResponse | str:
        """Into the queue; `arrived_ms` keeps an earlier place (a caller back from the callback
        offer, a callback's customer)."""
        events.append(make_event("enqueued", self.now, node=node_id, queue=queue))
        # A wait may be long: ops see the caller's ticket (in progress) while it lasts.
        self._ops.append(self._sync_in(call.sid))
        # Our own line (Twilio's queue is FIFO only): ordered by arrival, served by routing.
        arrived_ms = arrived_ms or int(self.now.timestamp() * 1000)
        seat = Seat(call.sid, queue, lang_id, arrived_ms, node_id, self.plan.branches.get(node_id, "other"))
        self._ops.append(lambda pipe: self.routing.join_in(pipe, seat))
        return self._memo(
            ("enqueue", lang_id, node_id, queue, *texts),
            lambda: render.enqueue(self.config, self.urls, lang_id, node_id, texts, queue),
        )

    def _closed_text(self, lang_id: str) -> str:
        opening = self.plan.hours.next_opening(self.now)
        lang = self.config.languages[lang_id]
        when = describe_opening(opening, self.now, lang) if opening else "—"
        return self.config.prompts.closed[lang_id].format(opening=when)

    # ----- input at a node ----------------------------------------------------------------

    def choice(self, call: Call, lang_id: str, node_id: str, attempt: int) -> VoiceResponse:
        lang_id, _ = self.plan.language(lang_id)
        node = self.plan.node(node_id)
        if node is None:
            return self._recover(call, lang_id, f"input for unknown node {node_id!r}")
        if not call.digits and not call.speech:
            # Gather's actionOnEmptyResult reading: the action came with nothing in it.
            if isinstance(node, TransferNode) and self.plan.hours.is_open(self.now):
                # Silence at the offers before queuing: on into the queue, as the Redirect after
                # them would have taken the caller.
                return self.join(call, lang_id, node_id, node.queue)
            return self._retry(call, lang_id, node_id, node, attempt, "no_input")
        if isinstance(node, MenuNode):
            option = self._match(node, lang_id, call)
            if option is not None:
                return self._moved(call, lang_id, node_id, node, option.goto, self._shown_input(node, call))
        if call.digits == self.keys.agent:
            return self._moved(call, lang_id, node_id, node, self.plan.agents[node_id], "agent_key")
        if call.digits == self.keys.back and node_id != self.config.menu.root:
            parent = self.plan.parents.get(node_id, self.config.menu.root)
            return self._moved(call, lang_id, node_id, node, parent, "back_key")
        if call.digits in (self.keys.repeat, self.keys.back):  # back at the top: nowhere higher, so again
            shown = "repeat_key" if call.digits == self.keys.repeat else "back_key"
            events = [self._input_event(node_id, node, shown, "repeat")]
            twiml = self._render_again(call, lang_id, node_id, node, attempt, [], True, events)
            self._log(call, events)
            return twiml
        if isinstance(node, TransferNode) and self.callback_key and call.digits == self.callback_key:
            kind = "peak" if self.plan.hours.is_open(self.now) else "closed"
            now_ms = int(self.now.timestamp() * 1000)
            twiml = self.callbacks.take_offer(call, lang_id, node_id, node.queue, now_ms, kind)
            if twiml is not None:
                return twiml
        message_node = self.config.after_hours.message_node
        if isinstance(node, TransferNode) and message_node and call.digits == self.config.after_hours.message_key:
            return self._moved(call, lang_id, node_id, node, message_node, call.digits)
        return self._retry(call, lang_id, node_id, node, attempt, "invalid_option")

    def silence(self, call: Call, lang_id: str, node_id: str, attempt: int) -> VoiceResponse:
        lang_id, _ = self.plan.language(lang_id)
        node = self.plan.node(node_id)
        if node is None:
            return self._recover(call, lang_id, f"silence at unknown node {node_id!r}")
        return self._retry(call, lang_id, node_id, node, attempt, "no_input")

    def _match(self, node: MenuNode, lang_id: str, call: Call) -> Option | None:
        if call.digits is not None:
            return next((o for o in node.options if o.key == call.digits), None)
        heard = (call.speech or "").casefold()
        best: tuple[int, Option] | None = None
        for option in node.options:
            for word in [option.label.get(lang_id, ""), *option.keywords.get(lang_id, [])]:
                word = word.casefold().strip()
                if word and _said(word, heard) and (best is None or len(word) > best[0]):
                    best = (len(word), option)  # the most specific match wins
        return best[1] if best else None

    def _shown_input(self, node: Node, call: Call) -> str:
        if node.sensitive:
            return "[redacted]"
        return shown_keys(call.digits)

    def _input_event(self, node_id: str, node: Node, shown: str, result: str) -> dict:
        shown = "[redacted]" if node.sensitive else shown
        return make_event("input", self.now, node=node_id, input=shown, result=result)

    def _moved(self, call: Call, lang_id: str, node_id: str, node: Node, target: str, shown: str) -> VoiceResponse:
        event = self._input_event(node_id, node, shown, "choice")
        return self._enter(call, lang_id, target, [], [event])

    def _retry(self, call: Call, lang_id: str, node_id: str, node: Node, attempt: int, reason: str) -> VoiceResponse:
        shown = "-" if reason == "no_input" else shown_keys(call.digits)
        event = self._input_event(node_id, node, shown, reason)
        if attempt >= self.config.input.max_attempts:
            if isinstance(node, TransferNode) and self.plan.hours.is_open(self.now):
                # Wrong keys at the offers before queuing: the caller asked for an agent, so
                # stop offering and queue them (the agent fallback would be this node again).
                events = [event, make_event("gave_up", self.now, node=node_id)]
                twiml = self._join(call, lang_id, node_id, node.queue, [], events)
                self._log(call, events)
                return twiml
            return self._give_up(call, lang_id, node_id, [event])
        reason_text = getattr(self.config.prompts, reason)[lang_id]
        events = [event]
        twiml = self._render_again(call, lang_id, node_id, node, attempt + 1, [reason_text], False, events)
        self._log(call, events)
        return twiml

    def _render_again(
        self,
        call: Call,
        lang_id: str,
        node_id: str,
        node: Node,
        attempt: int,
        preamble: list[str],
        full: bool,
        events: list[dict],
    ) -> VoiceResponse:
        """The same node again; an answer or a closed-line notice is repeated only when asked."""
        config, urls = self.config, self.urls
        if isinstance(node, MenuNode):
            return self._memo(
                ("menu", lang_id, node_id, attempt, *preamble),
                lambda: render.menu(config, urls, lang_id, node_id, node, attempt, preamble),
            )
        if isinstance(node, InfoNode) and not node.next:
            texts = [*preamble, node.message[lang_id]] if full else preamble
            return self._memo(
                ("info", lang_id, node_id, attempt, *texts),
                lambda: render.info(config, urls, lang_id, node_id, texts, attempt),
            )
        if isinstance(node, TransferNode) and not self.plan.hours.is_open(self.now):
            texts = [*preamble, self._closed_text(lang_id)] if full else preamble
            offer = config.after_hours.message_node is not None
            return render.closed(config, urls, lang_id, node_id, texts, attempt, offer, self.callback_key)
        if isinstance(node, TransferNode):
            texts = [*preamble, node.prompt[lang_id]] if full else preamble
            return self._queue_caller(call, lang_id, node_id, node.queue, texts, events, attempt=attempt)
        return self._render_entry(call, lang_id, node_id, node, preamble, events)

    def _give_up(self, call: Call, lang_id: str, node_id: str, events: list[dict]) -> VoiceResponse:
        """Too many failed attempts: an agent when the line is open, else when it opens, goodbye."""
        events.append(make_event("gave_up", self.now, node=node_id))
        sorry = self.config.prompts.too_many_attempts[lang_id]
        wants_agent = self.config.input.on_max_attempts == "agent_or_goodbye"
        if wants_agent and self.plan.hours.is_open(self.now):
            return self._enter(
                call, lang_id, self.plan.agents.get(node_id, self.config.input.agent_node), [sorry], events
            )
        self._log(call, events)
        texts = [sorry] if self.plan.hours.is_open(self.now) else [sorry, self._closed_text(lang_id)]
        return render.speak_and_hang_up(self.config, lang_id, texts)

    def _back_url(self, lang_id: str, node_id: str) -> str:
        return self.urls.node(lang_id, self.plan.parents.get(node_id, self.config.menu.root))

    # ----- recordings, queues, status -------------------------------------------------------

    def recorded(self, call: Call, lang_id: str, node_id: str, form) -> VoiceResponse:  # noqa: ANN001
        lang_id, _ = self.plan.language(lang_id)
        url = form.get("RecordingUrl")
        duration = whole_seconds(form.get("RecordingDuration"))
        events = []
        if url and duration >= 1:
            events.append(
                make_event(
                    "recording",
                    self.now,
                    event_id=f"rec-{form.get('RecordingSid') or url}",
                    node=node_id,
                    url=url,
                    duration_s=duration,
                    sid=form.get("RecordingSid"),
                )
            )
        try:
            reference = self.calls.append(call.sid, events, with_reference=True, also=self._sync_in(call.sid))
        except RedisError:
            # Twilio keeps the recording; this line is how ops find it for the ticket.
            log.error(
                "call %s: Redis unavailable, recording %s (%ss) not on the ticket yet",
                call.sid,
                form.get("RecordingSid") or url,
                duration,
            )
            reference = None
        if call.digits == "hangup" or call.status in TERMINAL_STATUSES:
            return render.empty()  # the caller is gone; the action only reports the recording
        if not events:
            texts = [self.config.prompts.recording_empty[lang_id]]
            return render.speak_and_redirect(self.config, lang_id, texts, self._back_url(lang_id, node_id))
        node = self.plan.node(node_id)
        if not isinstance(node, RecordNode) or reference is None:
            return render.speak_and_hang_up(self.config, lang_id, [self.config.prompts.message_saved[lang_id]])
        spoken = " ".join(str(reference))  # digit by digit, in every language
        return render.speak_and_hang_up(self.config, lang_id, [node.confirmation[lang_id].format(reference=spoken)])

    def queued(self, call: Call, lang_id: str, node_id: str, form, token: str | None = None) -> VoiceResponse:  # noqa: ANN001
        lang_id, _ = self.plan.language(lang_id)
        result = form.get("QueueResult") or "unknown"
        # One event per wait, however often Twilio retries its report: a caller may leave the
        # line for the callback offer, come back, and leave it again. Twilio's retries carry the
        # first request's idempotency token; without one, the wait's length tells waits apart.
        this_wait = (token or "")[:40] or form.get("QueueTime") or ""
        event = make_event(
            "queue_result",
            self.now,
            event_id=f"queue-{node_id}-{result}-{this_wait}",
            node=node_id,
            result=result,
            wait_s=whole_seconds(form.get("QueueTime")),
        )
        if result not in ("redirected", "redirected-from-bridged"):
            # (A redirect is the router taking the caller to their agent: the seat must stay until
            # that call is over. Twilio may or may not report it here; both readings work.)
            now_ms = int(self.now.timestamp() * 1000)
            self._ops.append(lambda pipe: self.routing.leave_in(pipe, call.sid, result == "hangup", now_ms))
        self._log(call, [event], sync=True)
        if result in _QUEUE_DONE or call.status in TERMINAL_STATUSES:
            return render.empty()
        if result == "queue-full":
            offer = self.config.after_hours.message_node is not None
            texts = [self.config.prompts.queue_full[lang_id]]
            return render.closed(self.config, self.urls, lang_id, node_id, texts, 1, offer)
        if result == "leave":
            # The caller took the callback offer while waiting (their seat is in the draft).
            taken = self.callbacks.after_leave(call, lang_id) if self.callbacks_kept else None
            return taken if taken is not None else self._enter(call, lang_id, self.config.menu.root, [])
        return self._recover(call, lang_id, f"queue result {result}")

    def hold(self, call: Call, lang_id: str, queue: str) -> VoiceResponse | str:
        """One turn of the waitUrl loop: the caller's place and wait when they have changed (or on
        the first turn), then music or a pause until the next turn."""
        lang_id, _ = self.plan.language(lang_id)
        queue_config = self.config.queues.get(queue, QueueConfig())
        now_s = self.now.timestamp()
        line = (queue, lang_id)
        try:
            if line not in self.plan.lines:
                # The URL names a line a reload dropped: the router moved the caller's seat to a
                # line it serves (callbacks/routing.py), so ask about that one.
                # (A second round trip, for these callers only, and only until their wait ends.)
                seat = self.routing.seat(call.sid)
                line = (seat.queue, seat.lang) if seat else line
                queue_config = self.config.queues.get(line[0], queue_config)  # its music, its pace
            current = estimate_for(self.routing, self.config, call.sid, *line, now_s)
        except RedisError:
            log.warning("call %s: Redis unavailable, holding without an announcement", call.sid)
            current = None
        last = current.announced if current else None
        if current is not None and not current.seated and queue in self.config.queues:
            # In Twilio's queue but not in our line (Redis was down when they joined): give them a
            # place now, or no agent would ever be matched with them.
            seat = Seat(call.sid, queue, lang_id, int(now_s * 1000), "", "other")
            self._ops.append(lambda pipe: self.routing.join_in(pipe, seat))
            self._log(call, [make_event("enqueued", self.now, node="", queue=queue, reseated=True)])
        if current is None or current.position is None:
            # Not (yet) in our line: the plain hold message this turn.
            hold = [self.config.prompts.hold[lang_id]]
            return self._memo(
                ("hold-plain", lang_id, queue), lambda: render.hold(self.config, lang_id, queue_config, hold)
            )
        texts, said_time = self._announcement(lang_id, queue_config, current, last, now_s)
        # Each announcement of a long wait offers the callback that keeps the caller's place.
        offer = self.callbacks_on and self.callbacks.offered_while_waiting(current.estimate.hi_s)
        offer_url = self.urls.hold_key(lang_id, queue) if offer else None
        if not texts and last is not None and last.get("before_queue"):
            # Place and wait were said just before the queue: the first turn does not say them
            # again, only welcomes (and keeps the callback key live).
            note = {**last, "before_queue": False}
            self._ops.append(lambda pipe: self.routing.announce_in(pipe, call.sid, note))
            self._log(call, [])
            welcome = [self.config.prompts.hold[lang_id]]
            return self._memo(
                ("hold-welcome", lang_id, queue, offer_url),
                lambda: render.hold(self.config, lang_id, queue_config, welcome, offer_url),
            )
        if not texts:
            return self._memo(("hold", lang_id, queue), lambda: render.hold(self.config, lang_id, queue_config, []))
        if last is None:
            texts.insert(0, self.config.prompts.hold[lang_id])
        spoken = current.spoken
        said = [spoken.kind, spoken.lo_min, spoken.hi_min]
        event = self._estimate_event(current, said_time=said_time, before_queue=False)
        promise = (
            {"promised_at": now_s, "upper_s": spoken.upper_s}
            if said_time
            else {"promised_at": (last or {}).get("promised_at"), "upper_s": (last or {}).get("upper_s")}
        )
        note = {"at": now_s, "position": current.position, "spoken": said, **promise}
        self._ops.append(lambda pipe: self.routing.announce_in(pipe, call.sid, note))
        self._log(call, [event])
        return render.hold(self.config, lang_id, queue_config, texts, offer_url)

    def hold_key(self, call: Call, lang_id: str, queue: str) -> VoiceResponse:
        """A key pressed during a hold turn (the callback offer's Gather)."""
        lang_id, _ = self.plan.language(lang_id)
        if not self.callbacks_on:
            return render.speak(self.config, lang_id, [self.config.prompts.invalid_option[lang_id]])
        return self.callbacks.hold_key(call, lang_id, queue)

    def _estimate_event(self, current: CallerEstimate, said_time: bool, before_queue: bool) -> dict:
        """What the caller was told, for the ticket (the actual wait is set next to it later)."""
        estimate, spoken = current.estimate, current.spoken
        return make_event(
            "wait_estimate",
            self.now,
            position=current.position,
            point_s=_seconds(estimate.point_s),
            lo_s=_seconds(estimate.lo_s),
            hi_s=_seconds(estimate.hi_s),
            before_queue=before_queue,
            spoken=[spoken.kind, spoken.lo_min, spoken.hi_min] if said_time else None,
        )

    def _announcement(
        self, lang_id: str, queue: QueueConfig, current: CallerEstimate, last: dict | None, now_s: float
    ) -> tuple[list[str], bool]:
        """What to say this turn, and whether it includes a time; nothing when nothing changed
        since the last announcement or it is not yet time to announce again."""
        prompts, spoken = self.config.prompts, current.spoken
        said = [spoken.kind, spoken.lo_min, spoken.hi_min]
        if last is not None:
            # Told a place before joining that others took meanwhile (callers who heard the
            # announcement at the same moment are all "number 1"): corrected on the first turn.
            overtaken = bool(last.get("before_queue")) and (current.position or 0) > (last.get("position") or 0)
            due = overtaken or now_s - last["at"] >= queue.announce_every_s - 1  # turns are paced; allow jitter
            if not due or (said == last["spoken"] and current.position == last["position"]):
                return [], False
        texts = [prompts.queue_position[lang_id].format(position=current.position)]
        upper, promised_at = (last or {}).get("upper_s"), (last or {}).get("promised_at")
        outwaited = upper is not None and promised_at is not None and now_s > promised_at + upper
        if outwaited and said == last["spoken"]:
            return texts, False  # never repeat a time the caller has already outwaited
        if spoken.kind == "less_than_minute":
            texts.append(prompts.wait_less_than_minute[lang_id])
        elif spoken.kind == "range":
            texts.append(prompts.wait_range[lang_id].format(lo=Count(spoken.lo_min), hi=Count(spoken.hi_min)))
        elif spoken.kind == "more_than":
            texts.append(prompts.wait_more_than[lang_id].format(lo=Count(spoken.lo_min)))
        else:
            texts.append(prompts.wait_unknown[lang_id])
        return texts, True

    def status(self, call: Call, form) -> None:  # noqa: ANN001
        seq = form.get("SequenceNumber")
        # The numbers again, as the ticket sees them (a call we placed: the customer is `To`):
        # a call whose first webhook met Redis down has no start event to take them from.
        outbound = (form.get("Direction") or "").startswith("outbound")
        caller, called = (call.called, call.caller) if outbound else (call.caller, call.called)
        event = make_event(
            "status",
            self.now,
            event_id=f"status-{call.status}-{seq or ''}",
            status=call.status,
            duration_s=whole_seconds(form.get("CallDuration")) if form.get("CallDuration") else None,
            seq=bounded_int(seq, _MOST_SEQUENCE) if seq else None,
            caller=caller,
            called=called,
        )
        if call.status in TERMINAL_STATUSES:
            # A caller who hangs up while queued must not keep a place (the Enqueue action may
            # come later, or never).
            now_ms = int(self.now.timestamp() * 1000)
            self._ops.append(lambda pipe: call_ended_in(pipe, self.routing, self.calls, call.sid, now_ms))
        self._log(call, [event], sync=call.status in TERMINAL_STATUSES)

    # ----- helpers --------------------------------------------------------------------------

    def _recover(self, call: Call, lang_id: str, reason: str, events: list[dict] | None = None) -> VoiceResponse:
        """The call lost its place (config changed under it, odd input): back to the main menu."""
        log.warning("call %s: recovering to the main menu: %s", call.sid, reason)
        events = [*(events or []), make_event("error", self.now, reason=reason)]
        return self._enter(call, lang_id, self.config.menu.root, [self.config.prompts.recover[lang_id]], events)

    def _memo(self, key: tuple, build: Callable[[], VoiceResponse]) -> str:
        """TwiML from a pure renderer, kept per config version: the same inputs (language, node,
        attempt, texts) always give the same document, so it is built and serialized once."""
        cache = self.plan.rendered
        text = cache.get(key)
        if text is None:
            text = str(build())
            if len(cache) < _MAX_CACHED_DOCUMENTS:
                cache[key] = text
        return text

    def _log(self, call: Call, events: list[dict], sync: bool = False) -> None:
        """Append events, mark the ticket due and apply routing changes in one round trip; never
        fail the caller."""
        ops, self._ops = self._ops, []
        if sync:
            ops.append(self._sync_in(call.sid))

        def also(pipe: Pipeline) -> None:
            for op in ops:
                op(pipe)

        try:
            self.calls.append(call.sid, events, also=also, retry_token=self.retry.next())
        except RedisError:
            # The caller must still be answered; the ticket will miss these steps.
            log.warning("call %s: Redis unavailable, %d ticket event(s) not logged", call.sid, len(events))

    def _sync_in(self, call_sid: str) -> Callable[[Pipeline], None]:
        return lambda pipe: self.mark_due(call_sid, pipe)


def call_ended_in(pipe: Pipeline, routing: RoutingState, calls: CallLog, call_sid: str, now_ms: int) -> None:
    """A call's end, in a pipeline: whatever comes later for it finds it gone, it leaves any
    line (an agent reserved for or talking to it freed), and it is no longer unfinished."""
    routing.mark_gone_in(pipe, call_sid)
    routing.leave_in(pipe, call_sid, True, now_ms)
    calls.ended_in(pipe, call_sid)


def _said(word: str, heard: str) -> bool:
    """Whether `word` was said in `heard`: at the start of a word where words are spaced ("app"
    is not in "happened", "how" not in "shows"; "charge" is in "charged", "refund" in "refunds"),
    anywhere in Japanese and Chinese, which are not spaced."""
    if any(ord(ch) >= 0x2E80 for ch in word):
        return word in heard
    return re.search(rf"(?<!\w){re.escape(word)}", heard) is not None


def shown_keys(digits: str | None) -> str:
    """What a menu input shows on the ticket: the key, or "speech" (never the transcript). Many
    keys at a one-key menu are redacted: a caller may be typing a card or account number."""
    if digits is None or digits == "":
        return "speech"
    return digits if len(digits) == 1 else "[redacted]"


def _seconds(value: float) -> int | None:
    return round(value) if value != float("inf") else None
