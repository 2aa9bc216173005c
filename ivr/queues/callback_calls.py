"""The outbound callback call's webhooks (see README "Callbacks").

Customer first:

The RQ job places the call to the customer while an agent is reserved for the callback. Twilio
fetches `answer` after answering-machine detection: a machine or fax ends the attempt (it counts
as failed); a person hears who is calling back and why, and from then on the call is an ordinary
live caller in the callback's seat: the agent's reservation moves to this call and the existing
connect flow rings the agent with the whisper. If that agent does not take it, the customer goes
back to the callback's original place in line, like any caller. The call gets its own ticket (it
is a call), and the callback block on the asking call's ticket names it.

`status` is the outbound call's status callback: it learns the call's sid early (`initiated`),
so a job that died before writing it down never dials twice, and it settles attempts that never
reached `answer` (no answer, busy, failed, cancelled).

Agent first: the job calls the reserved agent (`agent`): they hear the callback whisper and
press the accept key (`agent_accept`); their call then dials the customer with machine detection
on the customer's leg (`intro`: a person hears who calls and why before the bridge; a machine is
hung up on). `agent_done` (the Dial's action) settles the attempt: talked, or a failed attempt
for the customer. `agent_status` settles an agent who never answered or accepted: the agent is
set away and the callback goes back to its place, with no attempt counted against the customer.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from twilio.twiml.voice_response import VoiceResponse

from ivr.calllog import make_event
from ivr.formvalues import whole_seconds
from ivr.menus import render
from ivr.menus.flow import TERMINAL_STATUSES, Call, Flow
from ivr.menus.model import Language, TransferNode
from ivr.queues.callback_desk import CallbackDesk
from ivr.queues.callbacks import Callback, member
from ivr.queues.connect import AgentCalls
from ivr.queues.live import note_handled
from ivr.queues.state import Seat

log = logging.getLogger(__name__)

MACHINE = frozenset({"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "machine", "fax"})


def not_expected_goodbye(config, flow: Flow, callback: Callback) -> VoiceResponse:  # noqa: ANN001 - HotlineConfig
    """What a person hears who answers an attempt nobody waits for any more: where their
    callback stands, in its language, then goodbye — never a mute hang-up."""
    lang_id, _ = flow.plan.language(callback.lang)
    prompts = config.prompts
    # We called them: say who we are first, and do not thank them for calling.
    texts = [prompts.callback_this_is[lang_id].format(hotline=config.name_in(lang_id))]
    if callback.status in ("pending", "scheduled", "dialling"):  # it stands: a later attempt comes
        texts.append(prompts.callback_not_now[lang_id].format(reference=" ".join(str(callback.reference or ""))))
    elif callback.status == "cancelled":
        texts.append(prompts.callback_cancelled[lang_id])
    else:  # done or failed meanwhile
        texts.append(prompts.callback_closed_meanwhile[lang_id])
    return render.speak_and_hang_up(config, lang_id, texts, goodbye=prompts.callback_goodbye)


# Agent first, an agent who hangs up while the customer's phone rings: the callback keeps its
# place (no try counted) but waits this long, or the customer's phone would ring again at once.
AFTER_AGENT_HUNG_UP = timedelta(minutes=1)


def _is_the_attempts(callback: Callback, call_sid: str | None) -> bool:
    """Whether `call_sid` may be the current attempt's call: its recorded one, or none yet."""
    recorded = (callback.attempt or {}).get("call_sid")
    return not recorded or not call_sid or recorded == call_sid


class CallbackCalls:
    def __init__(self, desk: CallbackDesk, flow: Flow, agents: AgentCalls):
        self.desk, self.flow, self.agents = desk, flow, agents
        self.config = flow.config

    def answer(self, call: Call, callback_id: str, n: int, form) -> VoiceResponse:  # noqa: ANN001
        desk = self.desk
        callback = desk.book.get(callback_id)
        answered_by = form.get("AnsweredBy") or ""
        if callback is None or not callback.dialling(n):
            # A customer answering an attempt we gave up on is on the line: they keep the
            # callback's place. Not if the call has ended already (its status came first).
            gone = answered_by in MACHINE or desk.routing.gone(call.sid)
            late = None if gone else desk.answered_late(callback_id, n, call.sid)
            if late is None:
                return self._not_expected(callback, gone or answered_by in MACHINE)
            return self._live(call, late, form, answered_by, agent_id="")
        recorded = desk.record_dial(callback_id, n, "call_sid", call.sid)
        if recorded is not None and not _is_the_attempts(recorded, call.sid):
            # A second run's call, answered before its cancel landed, while the attempt's own
            # call rings: this one is not the callback's.
            return self._not_expected(recorded, answered_by in MACHINE)
        if answered_by in MACHINE:
            desk.attempt_over(callback_id, n, "machine", call.sid)
            vr = VoiceResponse()
            vr.hangup()
            return vr
        if desk.connected(callback_id, n, callback.agent, agent_on_line=False) is None:
            # The attempt was given up on between our read and now (its reservation timed out):
            # the customer is on the line all the same, so they wait in the callback's place.
            late = desk.answered_late(callback_id, n, call.sid)
            if late is None:
                return self._not_expected(desk.book.get(callback_id), False)
            return self._live(call, late, form, answered_by, agent_id="")
        return self._live(call, callback, form, answered_by, agent_id=callback.agent or "")

    def _not_expected(self, callback: Callback | None, nobody_listens: bool) -> VoiceResponse:
        """A person answered an attempt nobody waits for any more: never a mute hang-up."""
        if nobody_listens:
            vr = VoiceResponse()
            vr.hangup()
            return vr
        if callback is None:
            # Its record is lost (Redis lost its data): apologise, and connect to the backup
            # line when one is configured, as the number's fallback does.
            return render.fallback(self.config)
        return not_expected_goodbye(self.config, self.flow, callback)

    def _live(self, call: Call, callback: Callback, form, answered_by: str, agent_id: str) -> VoiceResponse:  # noqa: ANN001
        """The customer is on the line: who calls and why, then the reserved agent (or, with
        none, the callback's original place in line)."""
        desk = self.desk
        lang_id, lang = self.flow.plan.language(callback.lang)
        # This call is now the callback's live caller: its ticket starts here.
        start = make_event(
            "call",
            desk.now,
            event_id="start",
            caller=callback.number,
            called=form.get("From") or "",
            callback_id=callback.id,
            callback_for=callback.call_sid,
            branch=callback.branch,
        )
        desk.calls.start(call.sid, start)
        seat = Seat(call.sid, callback.queue, lang_id, callback.arrived_ms, callback.node, callback.branch, callback.id)
        handed = bool(agent_id) and desk.routing.hand_over(agent_id, member(callback.id), seat, desk.now_ms)
        reference = " ".join(str(callback.reference or ""))
        intro = self.config.prompts.callback_intro[lang_id].format(
            hotline=self.config.name_in(lang_id),
            branch=lang.branch_names.get(callback.branch, callback.branch),
            reference=reference,
        )
        events = [
            make_event("language", desk.now, lang=lang_id),
            make_event("callback_answered", desk.now, callback_id=callback.id, answered_by=answered_by or None),
        ]
        if handed:
            # In line from now on, at the callback's seat (the agent may miss the whisper and send
            # the customer back to it): the ticket's queue block starts here, as a live caller's.
            events.append(make_event("enqueued", desk.now, node=callback.node, queue=callback.queue))
        desk.calls.append(call.sid, events, retry_token=self.flow.retry.next())
        if handed:
            return self.agents.connect(call.sid, lang_id, agent_id, [intro])
        # No agent held for it (the gate is off, or the reservation lapsed): wait in the
        # callback's original place, as a live caller.
        twiml_events: list[dict] = []
        node = callback.node if isinstance(self.flow.plan.node(callback.node), TransferNode) else None
        node = node or self.config.input.agent_node
        queue = callback.queue if callback.queue in self.config.queues else self.flow.plan.node(node).queue
        twiml = self.flow._join(call, lang_id, node, queue, [intro], twiml_events, callback.arrived_ms)
        self.flow._log(call, twiml_events)
        return twiml

    def status(self, call: Call, callback_id: str, n: int, form) -> None:  # noqa: ANN001
        desk = self.desk
        callback = desk.book.get(callback_id)
        attempt = callback.attempt if callback else None
        # Not a second run's call (cancelled: the attempt's own call still rings).
        ours = (
            callback is not None and attempt is not None and attempt["n"] == n and _is_the_attempts(callback, call.sid)
        )
        if ours and call.sid and not attempt.get("call_sid"):
            desk.record_dial(callback_id, n, "call_sid", call.sid)
        if call.status not in TERMINAL_STATUSES:
            return
        # Whatever comes later for this call (an answer webhook it overtook) finds it gone: it
        # takes no seat in line and closes no callback.
        desk.routing.mark_gone(call.sid)
        if ours and callback.status == "dialling" and not attempt.get("result"):
            # It ended before `answer` ran: never answered, busy, failed, or hung up at once.
            result = call.status if call.status != "completed" else "hung_up"
            desk.attempt_over(callback_id, n, result, call.sid)
        if desk.calls.reference(call.sid) is not None:
            # The customer answered: the live part of the call ends like any call's (out of
            # line, agent freed, ticket due). An unanswered attempt makes no ticket of its own.
            self.flow.status(call, form)


class AgentFirstCalls:
    """Agent-first dialling: the agent's outbound call, then the customer from it."""

    def __init__(self, desk: CallbackDesk, flow: Flow, urls, caller_id: str):  # noqa: ANN001 - FlaskUrls
        self.desk, self.flow, self.urls, self.caller_id = desk, flow, urls, caller_id
        self.config = flow.config

    def _current(self, callback_id: str, n: int, leg: str | None) -> Callback | None:
        """The callback while attempt n is under way on this agent leg (`leg`: the agent's call;
        another is a second run's call, cancelled, whose news must not settle the attempt)."""
        callback = self.desk.book.get(callback_id)
        if callback is None or not callback.dialling(n) or not _is_the_attempts(callback, leg):
            return None
        return callback

    def _agent_lang(self, callback: Callback) -> tuple[str, Language]:
        agent = next((a for a in self.config.agents if a.id == callback.agent), None)
        return self.flow.plan.language(render.agent_language(self.config, agent.languages if agent else []))

    def agent(self, call: Call, callback_id: str, n: int) -> VoiceResponse:
        """The agent answered: the callback whisper, then the accept key."""
        vr = VoiceResponse()
        callback = self._current(callback_id, n, call.sid)
        if callback is None:
            vr.hangup()
            return vr
        self.desk.record_dial(callback_id, n, "call_sid", call.sid)
        # No key: the agent's call ends; its status callback puts the callback back.
        return render.callback_whisper(
            self.config,
            self._agent_lang(callback)[0],
            callback.branch,
            callback.lang,
            callback.requested_ms,
            self.desk.now_ms,
            callback.reference,
            self.urls.callback_agent_accept(callback_id, n),
        )

    def agent_accept(self, call: Call, callback_id: str, n: int) -> VoiceResponse:
        vr = VoiceResponse()
        callback = self._current(callback_id, n, call.sid)
        accepted = (
            callback is not None
            and call.digits == self.config.routing.accept_key
            and self.desk.routing.transition(
                callback.agent or "", member(callback_id), ["reserved"], "busy", self.desk.now_ms, keep_call=True
            )
        )
        if not accepted:
            vr.hangup()
            return vr
        lang_id, lang = self._agent_lang(callback)
        render.say(vr, self.config.prompts.callback_calling_customer[lang_id], lang)
        policy = self.desk.policy
        dial = vr.dial(
            action=self.urls.callback_agent_done(callback_id, n),
            method="POST",
            timeout=policy.ring_timeout_s,
            caller_id=self.caller_id,
            answer_on_bridge=True,
        )
        number = {"url": self.urls.callback_intro(callback_id, n), "method": "POST"}
        if policy.machine_detection:
            number["machine_detection"] = "Enable"
        dial.number(callback.number, **number)
        return vr

    def intro(self, call: Call, callback_id: str, n: int, form) -> VoiceResponse:  # noqa: ANN001
        """On the customer's leg once answered, before the bridge."""
        vr = VoiceResponse()
        callback = self._current(callback_id, n, form.get("ParentCallSid") or None)
        answered_by = form.get("AnsweredBy") or "unknown"
        if callback is not None:
            self.desk.record_dial(callback_id, n, "answered_by", answered_by)
        if answered_by in MACHINE:
            vr.hangup()  # the customer's leg ends; the Dial's action settles the attempt
            return vr
        if callback is None:
            # Given up on between the agent's key and this answer, or its record lost: a word
            # before the leg ends (a Dial's Number may not Dial again, so no backup line here).
            known = self.desk.book.get(callback_id)
            if known is not None:
                return not_expected_goodbye(self.config, self.flow, known)
            for lang_id, lang in self.config.languages.items():
                render.say(vr, self.config.prompts.fallback[lang_id], lang)
            vr.hangup()
            return vr
        lang_id, lang = self.flow.plan.language(callback.lang)
        intro = self.config.prompts.callback_intro[lang_id].format(
            hotline=self.config.name_in(lang_id),
            branch=lang.branch_names.get(callback.branch, callback.branch),
            reference=" ".join(str(callback.reference or "")),
        )
        render.say(vr, intro, lang)
        return vr  # an empty rest: Twilio bridges the customer to the agent

    def agent_done(self, call: Call, callback_id: str, n: int, form) -> VoiceResponse:  # noqa: ANN001
        """The Dial of the customer ended, on the agent's call."""
        vr = VoiceResponse()
        callback = self._current(callback_id, n, call.sid)
        if callback is None:
            vr.hangup()
            return vr
        agent_id, now_ms = callback.agent or "", self.desk.now_ms
        answered_by = (callback.attempt or {}).get("answered_by") or ""
        bridged = form.get("DialBridged") == "true" or (
            form.get("DialCallStatus") == "completed" and answered_by not in MACHINE
        )
        if bridged:
            self.desk.connected(callback_id, n, agent_id)
            self.desk.routing.transition(agent_id, member(callback_id), ["busy"], "wrap_up", now_ms, keep_call=True)
            duration = whole_seconds(form.get("DialCallDuration"))
            with self.desk.routing.redis.pipeline(transaction=False) as pipe:
                note_handled(pipe, callback.queue, duration + self.config.routing.wrap_up_s)
                pipe.execute()
            vr.hangup()
            return vr
        if answered_by in MACHINE:
            result = "machine"
        elif call.status in TERMINAL_STATUSES or form.get("DialCallStatus") == "canceled":
            # The agent hung up while the customer's phone rang (Twilio cancels the Dial): our
            # side ended it, so it is not counted against the customer — as when the agent's
            # status callback, not this action, brings the news first (`agent_status`).
            result = "agent_hung_up"
        else:
            result = form.get("DialCallStatus") or "no-answer"
        # The agent did their part: free again (the desk frees only agents still reserved).
        self.desk.routing.transition(agent_id, member(callback_id), ["busy"], "available", now_ms)
        # An agent who hung up may have left the customer's phone ringing: not again at once.
        later = self.desk.now + AFTER_AGENT_HUNG_UP if result == "agent_hung_up" else None
        settled = self.desk.attempt_over(callback_id, n, result, form.get("DialCallSid"), not_before=later)
        if result == "agent_hung_up":
            vr.hangup()  # nobody hears it: the agent's call is over
            return vr
        lang_id, lang = self._agent_lang(callback)
        prompts = self.config.prompts
        missed = prompts.callback_customer_missed_last if settled == "failed" else prompts.callback_customer_missed
        render.say(vr, missed[lang_id], lang)
        vr.hangup()
        return vr

    def agent_status(self, call: Call, callback_id: str, n: int) -> None:
        """The agent's call status: one that ends before the agent accepted is the agent's miss."""
        callback = self._current(callback_id, n, call.sid)
        if callback is None:
            return
        if call.sid and not callback.attempt.get("call_sid"):
            self.desk.record_dial(callback_id, n, "call_sid", call.sid)
        if call.status not in TERMINAL_STATUSES:
            return
        agent_id, now_ms = callback.agent or "", self.desk.now_ms
        if self.desk.routing.transition(agent_id, member(callback_id), ["reserved"], "away", now_ms):
            log.info("callback %s: agent %s did not take it (%s); set away", callback_id, agent_id, call.status)
            self.desk.attempt_over(callback_id, n, "agent_missed", call.sid)
            return
        # The agent had accepted. Twilio may send this before the Dial's action (`agent_done`),
        # which settles the attempt; so settle here only what that action would.
        answered_by = callback.attempt.get("answered_by") or ""
        if answered_by and answered_by not in MACHINE:
            # The customer was there (intro ran): they talked, and the agent wraps up.
            if self.desk.connected(callback_id, n, agent_id) is not None:
                self.desk.routing.transition(agent_id, member(callback_id), ["busy"], "wrap_up", now_ms, keep_call=True)
        elif self.desk.routing.transition(agent_id, member(callback_id), ["busy"], "available", now_ms):
            # The agent hung up before the customer answered (or a machine did): nobody talked.
            result = "machine" if answered_by in MACHINE else "agent_hung_up"
            later = self.desk.now + AFTER_AGENT_HUNG_UP if result == "agent_hung_up" else None
            self.desk.attempt_over(callback_id, n, result, call.sid, not_before=later)
