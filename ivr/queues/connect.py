"""Connecting a reserved agent: the caller's `<Dial>`, the agent's whisper and accept key, and
what happens after (wrap-up, or: agent set away and the caller back in their place).

The router (worker) reserves an agent for a caller atomically and redirects the queued caller's
call here through Twilio's REST API (`callbacks/routing.py`). Everything below runs in
webhooks: the caller's leg (`connect`, `connected`) and the agent's leg (`whisper`, `accept`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from redis.exceptions import RedisError
from twilio.twiml.voice_response import VoiceResponse

from ivr.calllog import CallLog, RetryNames, make_event
from ivr.formvalues import whole_seconds
from ivr.menus import render
from ivr.menus.model import Agent, TransferNode
from ivr.menus.runtime import Plan
from ivr.queues.callback_desk import note_callback
from ivr.queues.callbacks import CallbackBook, record_key
from ivr.queues.lines import rehome_line
from ivr.queues.live import note_handled
from ivr.queues.state import RoutingState, Seat

log = logging.getLogger(__name__)


class ConnectUrls(Protocol):
    def connected(self, lang: str, agent_id: str) -> str: ...
    def whisper(self, agent_id: str) -> str: ...
    def accept(self, agent_id: str) -> str: ...
    def queued(self, lang: str, node_id: str) -> str: ...
    def hold(self, lang: str, queue: str) -> str: ...


class AgentCalls:
    def __init__(
        self,
        plan: Plan,
        routing: RoutingState,
        calls: CallLog,
        urls: ConnectUrls,
        now: datetime,
        mark_due: Callable,
        retry: RetryNames | None = None,
    ):
        self.plan, self.routing, self.calls, self.urls, self.now = plan, routing, calls, urls, now
        self.retry = retry or RetryNames(None)  # the webhook's retry token names its events
        self.config = plan.config
        self.mark_due = mark_due

    @property
    def now_ms(self) -> int:
        return int(self.now.timestamp() * 1000)

    def agent(self, agent_id: str) -> Agent | None:
        return next((a for a in self.config.agents if a.id == agent_id), None)

    # ----- the caller's leg ---------------------------------------------------------------

    def connect(self, call_sid: str, lang_id: str, agent_id: str, preamble: list[str] = ()) -> VoiceResponse:
        """The caller, redirected out of the queue: ring the reserved agent, whisper first. (A
        callback's customer comes here too, after `preamble`: who calls them back and why.)"""
        agent = self.agent(agent_id)
        seat = self.routing.seat(call_sid)
        routing = self.config.routing
        if agent is None or seat is None:
            # The agent left the config, or the caller's place is gone: free the agent, and the
            # caller goes back in line (with a new place if theirs was lost).
            self.routing.transition(agent_id, call_sid, ["reserved"], "available", self.now_ms)
            return self._back_in_line(call_sid, lang_id, agent_id, "agent or seat unknown", set_away=False)
        self._log(call_sid, [make_event("agent_offered", self.now, agent=agent_id)])
        vr = VoiceResponse()
        for text in preamble:
            render.say(vr, text, self.plan.language(lang_id)[1])
        dial = vr.dial(
            action=self.urls.connected(lang_id, agent_id),
            method="POST",
            timeout=routing.ring_timeout_s,
            answer_on_bridge=True,
        )
        whisper = {"url": self.urls.whisper(agent_id), "method": "POST"}
        if agent.phone:
            dial.number(agent.phone, **whisper)
        else:
            dial.client(agent.client, **whisper)
        return vr

    def connected(self, call_sid: str, lang_id: str, agent_id: str, form) -> VoiceResponse:  # noqa: ANN001
        """The caller's Dial ended: after a conversation, wrap-up; without one, next agent."""
        bridged = form.get("DialBridged") == "true" or (
            form.get("DialCallStatus") == "completed" and self._agent_on(agent_id, call_sid, "busy")
        )
        if form.get("CallStatus") in ("completed", "busy", "failed", "no-answer", "canceled") and not bridged:
            # The caller hung up while the agent's phone rang: free the agent; nobody to re-queue.
            self.routing.transition(agent_id, call_sid, ["reserved"], "available", self.now_ms)
            self.routing.leave(call_sid)
            return render.empty()
        if not bridged:
            reason = form.get("DialCallStatus") or "no answer"
            return self._back_in_line(call_sid, lang_id, agent_id, reason, set_away=True)
        duration = whole_seconds(form.get("DialCallDuration"))
        seat = None
        try:
            self.routing.transition(agent_id, call_sid, ["busy", "reserved"], "wrap_up", self.now_ms, keep_call=True)
            seat = self.routing.leave(call_sid)
            if seat is not None:  # the handle time that blocked the agent: talk plus wrap-up
                handle_s = duration + self.config.routing.wrap_up_s
                with self.routing.redis.pipeline(transaction=False) as pipe:
                    note_handled(pipe, seat.queue, handle_s)
                    pipe.execute()
        except RedisError:
            # They talked; the caller hears goodbye all the same. The agent's status frees once
            # the call's final status is seen (or ops force it; see `on_call`).
            log.warning("call %s: Redis unavailable, agent %s not moved to wrap-up", call_sid, agent_id)
        self._log(call_sid, [make_event("agent_call", self.now, agent=agent_id, duration_s=duration)], sync=True)
        # A callback's customer did not call us this time: no "thank you for calling".
        goodbye = self.config.prompts.callback_goodbye if seat is not None and seat.callback else None
        return render.speak_and_hang_up(self.config, self.plan.language(lang_id)[0], [], goodbye=goodbye)

    def _back_in_line(self, call_sid: str, lang_id: str, agent_id: str, reason: str, set_away: bool) -> VoiceResponse:
        if set_away:
            self.routing.transition(agent_id, call_sid, ["reserved", "busy"], "away", self.now_ms)
        seat = self.routing.seat(call_sid)
        if seat is None:  # their place was lost (Redis): a new one, or they would wait forever
            lang_id, _ = self.plan.language(lang_id)
            node_id = self.config.input.agent_node
            queue = self.plan.node(node_id).queue
            self.routing.join(Seat(call_sid, queue, lang_id, self.now_ms, node_id, "agent"))
        position = self.routing.back_to_line(call_sid)
        if seat is not None and (seat.queue, seat.lang) not in self.plan.lines:
            # Their line was dropped by a reload while an agent was reserved: to the line the
            # router would move it to (now, so Twilio's queue and our seat agree), at their place.
            rehome_line(self.routing, self.calls, self.config, seat.queue, seat.lang, self.now)
            seat = self.routing.seat(call_sid) or seat
            position = self.routing.position(call_sid, seat.queue, seat.lang)
        self._log(call_sid, [make_event("agent_missed", self.now, agent=agent_id, reason=reason, position=position)])
        self._wake()
        lang_id, _ = self.plan.language(seat.lang if seat else lang_id)
        texts = [self.config.prompts.agent_missed[lang_id]]
        node_id = seat.node if seat else ""
        if not isinstance(self.plan.node(node_id), TransferNode):  # no seat, or its node was removed
            node_id = self.config.input.agent_node
        queue = seat.queue if seat and seat.queue in self.config.queues else self.plan.node(node_id).queue
        return render.enqueue(self.config, self.urls, lang_id, node_id, texts, queue)

    # ----- the agent's leg ----------------------------------------------------------------

    def whisper(self, agent_id: str, caller_sid: str) -> VoiceResponse:
        """Before the bridge, the agent hears why the caller calls, and presses a key to accept."""
        agent = self.agent(agent_id)
        seat = self.routing.seat(caller_sid)
        vr = VoiceResponse()
        if agent is None or seat is None:
            vr.hangup()
            return vr
        reference, since_ms = self._reference_and_since(caller_sid, seat)
        agent_lang = render.agent_language(self.config, agent.languages)
        accept_url = self.urls.accept(agent_id)
        # No key: the agent's leg ends and the caller's Dial action moves them on.
        if seat.callback:
            return render.callback_whisper(
                self.config, agent_lang, seat.branch, seat.lang, since_ms, self.now_ms, reference, accept_url
            )
        wait_min = round((self.now_ms - since_ms) / 60000)
        whisper = self.config.prompts.whisper
        return render.agent_whisper(
            self.config, whisper, agent_lang, seat.branch, seat.lang, wait_min, reference, accept_url
        )

    def accept(self, agent_id: str, caller_sid: str, digits: str | None) -> VoiceResponse:
        vr = VoiceResponse()
        accepted = digits == self.config.routing.accept_key and self.routing.transition(
            agent_id, caller_sid, ["reserved"], "busy", self.now_ms, keep_call=True
        )
        if not accepted:  # another key, or the caller is gone / the reservation moved on
            vr.hangup()
            return vr
        self._log(caller_sid, [make_event("agent_accepted", self.now, agent=agent_id)])
        self._note_callback_taken(agent_id, caller_sid)
        return vr  # an empty document on the whisper leg: Twilio bridges the two calls

    # ----- helpers ------------------------------------------------------------------------

    def _note_callback_taken(self, agent_id: str, caller_sid: str) -> None:
        """A callback's customer now talks to this agent: the asking call's ticket names them
        (not the agent reserved when the customer answered, who may have missed the whisper)."""
        try:
            seat = self.routing.seat(caller_sid)
            callback = CallbackBook(self.routing.redis).get(seat.callback) if seat and seat.callback else None
            if callback is not None:
                event_id = f"cb-{callback.id}-taken-{caller_sid}"
                note_callback(self.calls, self.mark_due, self.now, callback, "callback_taken", event_id, agent=agent_id)
        except RedisError:  # the bridge matters more than the note
            log.warning("call %s: Redis unavailable, callback's agent not noted", caller_sid)

    def _reference_and_since(self, call_sid: str, seat: Seat) -> tuple[int | None, int]:
        """The reference the caller knows, and since when they have waited for us. For a
        callback's customer: the reference they were given when they asked (the callback call's
        own ticket has another), and the time they asked — the seat keeps their earlier arrival
        in line, which is not what "booked … ago" tells the agent."""
        if seat.callback:
            ref, requested_ms = self.routing.redis.hmget(record_key(seat.callback), ["reference", "requested_ms"])
            since_ms = int(requested_ms or seat.arrived_ms)
            return (int(ref) if ref else self.calls.reference(call_sid)), since_ms
        return self.calls.reference(call_sid), seat.arrived_ms

    def _agent_on(self, agent_id: str, call_sid: str, status: str | None = None) -> bool:
        current = self.routing.agents().get(agent_id)
        return current is not None and current[2] == call_sid and (status is None or current[0] == status)

    def _log(self, call_sid: str, events: list[dict], sync: bool = False) -> None:
        try:
            self.calls.append(
                call_sid,
                events,
                also=(lambda pipe: self.mark_due(call_sid, pipe)) if sync else None,
                retry_token=self.retry.next(),
            )
        except RedisError:
            log.warning("call %s: Redis unavailable, %d routing event(s) not logged", call_sid, len(events))

    def _wake(self) -> None:
        with self.routing.redis.pipeline(transaction=False) as pipe:
            self.routing.wake_in(pipe)
            pipe.execute()
