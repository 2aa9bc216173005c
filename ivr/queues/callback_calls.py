"""The outbound callback call's webhooks (customer-first dialling, see README "Callbacks").

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
"""

from __future__ import annotations

import logging

from twilio.twiml.voice_response import VoiceResponse

from ivr.calllog import make_event
from ivr.menus.flow import TERMINAL_STATUSES, Call, Flow
from ivr.queues.callback_desk import CallbackDesk
from ivr.queues.callbacks import member
from ivr.queues.connect import AgentCalls
from ivr.queues.state import Seat

log = logging.getLogger(__name__)

MACHINE = frozenset({"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "machine", "fax"})


class CallbackCalls:
    def __init__(self, desk: CallbackDesk, flow: Flow, agents: AgentCalls):
        self.desk, self.flow, self.agents = desk, flow, agents
        self.config = flow.config

    def answer(self, call: Call, callback_id: str, n: int, form) -> VoiceResponse:  # noqa: ANN001
        desk = self.desk
        callback = desk.book.get(callback_id)
        attempt = callback.attempt if callback else None
        if callback is None or callback.status != "dialling" or attempt is None or attempt["n"] != n:
            # Cancelled or settled meanwhile: nobody is waiting for this call.
            vr = VoiceResponse()
            vr.hangup()
            return vr
        desk.record_dial(callback_id, n, "call_sid", call.sid)
        answered_by = form.get("AnsweredBy") or ""
        if answered_by in MACHINE:
            desk.attempt_over(callback_id, n, "machine", call.sid)
            vr = VoiceResponse()
            vr.hangup()
            return vr
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
        )
        desk.calls.start(call.sid, start)
        seat = Seat(
            call.sid, callback.queue, lang_id, callback.arrived_ms, callback.node, callback.branch, callback.id
        )
        agent_id = callback.agent or ""
        handed = bool(agent_id) and desk.routing.hand_over(agent_id, member(callback.id), seat)
        desk.connected(callback_id, n, agent_id or None)
        reference = " ".join(str(callback.reference or ""))
        intro = self.config.prompts.callback_intro[lang_id].format(
            hotline=self.config.name,
            branch=lang.branch_names.get(callback.branch, callback.branch),
            reference=reference,
        )
        events = [
            make_event("language", desk.now, lang=lang_id),
            make_event("callback_answered", desk.now, callback_id=callback.id, answered_by=answered_by or None),
        ]
        desk.calls.append(call.sid, events)
        if handed:
            return self.agents.connect(call.sid, lang_id, agent_id, [intro])
        # No agent held for it (the gate is off, or the reservation lapsed): wait in the
        # callback's original place, as a live caller.
        twiml_events: list[dict] = []
        twiml = self.flow._join(
            call, lang_id, callback.node, callback.queue, [intro], twiml_events, callback.arrived_ms
        )
        self.flow._log(call, twiml_events)
        return twiml

    def status(self, call: Call, callback_id: str, n: int, form) -> None:  # noqa: ANN001
        desk = self.desk
        callback = desk.book.get(callback_id)
        attempt = callback.attempt if callback else None
        ours = callback is not None and attempt is not None and attempt["n"] == n
        if ours and call.sid and not attempt.get("call_sid"):
            desk.record_dial(callback_id, n, "call_sid", call.sid)
        if call.status not in TERMINAL_STATUSES:
            return
        if ours and callback.status == "dialling" and not attempt.get("result"):
            # It ended before `answer` ran: never answered, busy, failed, or hung up at once.
            result = call.status if call.status != "completed" else "hung_up"
            desk.attempt_over(callback_id, n, result, call.sid)
        if desk.calls.reference(call.sid) is not None:
            # The customer answered: the live part of the call ends like any call's (out of
            # line, agent freed, ticket due). An unanswered attempt makes no ticket of its own.
            self.flow.status(call, form)
