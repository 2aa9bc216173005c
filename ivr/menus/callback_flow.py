"""Taking a callback on a live call: the offer accepted (before queuing, while waiting, on a
closed line), the number (the caller ID, or one typed in, normalised and read back), the booking,
and a caller who phones while their callback is pending.

Where the caller is in this conversation lives in the signed URL (step and attempt); what they
chose so far lives in a short-lived draft in Redis (which line and arrival they keep, the number
typed). Entered digits are never logged and show as `[redacted]` on the ticket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from twilio.twiml.voice_response import VoiceResponse

from ivr.calllog import make_event, utc_iso
from ivr.hours import describe_opening
from ivr.menus import render
from ivr.menus.flow import shown_keys
from ivr.menus.model import TransferNode
from ivr.phone import callback_number, last_digits, spoken_number
from ivr.queues.callback_desk import note_callback, past_attempt_events
from ivr.queues.callbacks import OPEN, Callback, CallbackBook, member
from ivr.queues.estimator import may_run_past
from ivr.queues.live import estimate_for

if TYPE_CHECKING:
    from ivr.menus.flow import Call, Flow

log = logging.getLogger(__name__)

STEPS = ("number", "entry", "readback")
# Schedules a callback's seat in line (or its dial, without the agent gate) for a time.
Schedule = Callable[[Callback, datetime], None]


class CallbackFlow:
    def __init__(self, flow: Flow, book: CallbackBook, schedule: Schedule):
        self.flow, self.book, self.schedule = flow, book, schedule
        self.config = flow.config
        self.policy = flow.config.callbacks
        self.plan = flow.plan
        self.now = flow.now

    @property
    def now_ms(self) -> int:
        return int(self.now.timestamp() * 1000)

    def offered_at(self, estimate_hi_s: float) -> bool:
        """Offer a callback before queuing when the wait may be longer than the threshold (peak)."""
        return self.policy.enabled and estimate_hi_s > self.policy.offer_above_s

    def offered_while_waiting(self, estimate_hi_s: float) -> bool:
        """Offer a callback with a wait announcement (by default, with every one)."""
        return self.policy.enabled and estimate_hi_s > self.policy.offer_while_waiting_above_s

    # ----- the offer taken ------------------------------------------------------------------

    def take_offer(self, call: Call, lang_id: str, node_id: str, queue: str, arrived_ms: int, kind: str):
        """The caller pressed the callback key at a transfer node (before queuing or on a closed
        line): remember where they would wait, then ask for the number."""
        branch = self.plan.branches.get(node_id, "other")
        draft = {"queue": queue, "node": node_id, "branch": branch, "arrived_ms": arrived_ms, "kind": kind}
        try:
            self.book.save_draft(call.sid, draft)
        except RedisError:
            log.warning("call %s: Redis unavailable, callback offer cannot be taken", call.sid)
            return None
        event = make_event("input", self.now, node=node_id, input=self.policy.key, result="callback")
        return self._number_step(call, lang_id, 1, [], [event])

    def hold_key(self, call: Call, lang_id: str, queue: str) -> VoiceResponse:
        """A key pressed while waiting. The callback key keeps the caller's seat (its arrival)
        in a draft and leaves Twilio's queue; the Enqueue action then asks for the number."""
        prompts = self.flow.config.prompts
        try:
            taken = self.policy.enabled and call.digits == self.policy.key
            seat = self.flow.routing.seat(call.sid) if taken else None
            if seat is None:
                # Any other key: say so, then back to the hold loop (the waitUrl runs again).
                return render.speak(self.flow.config, lang_id, [prompts.invalid_option[lang_id]])
            draft = {
                "queue": seat.queue,
                "node": seat.node,
                "branch": seat.branch or "other",
                "arrived_ms": seat.arrived_ms,
                "kind": "queue",
            }
            self.book.save_draft(call.sid, draft)
        except RedisError:
            # No callback can be booked without Redis; the caller keeps waiting in Twilio's queue.
            log.warning("call %s: Redis unavailable, callback key on hold not taken", call.sid)
            return render.speak(self.flow.config, lang_id, [prompts.callback_unavailable[lang_id]])
        self.flow._log(call, [make_event("input", self.now, node="hold", input=call.digits, result="callback")])
        return render.leave_queue()

    def after_leave(self, call: Call, lang_id: str) -> VoiceResponse | None:
        """The Enqueue action after a Leave: the number step, if the caller took the offer."""
        try:
            draft = self.book.draft(call.sid)
        except RedisError:
            return None
        return self._number_step(call, lang_id, 1, [], []) if draft else None

    # ----- the steps --------------------------------------------------------------------

    def answer(self, call: Call, lang_id: str, step: str, attempt: int) -> VoiceResponse:
        draft = self._draft(call)
        if draft is None:
            return self.flow._recover(call, lang_id, "callback step without a draft")
        digits = call.digits or ""
        if step == "number":
            caller = self._callable(call.caller, call)
            if digits == "1" and caller:
                return self._book(call, lang_id, draft, caller, [self._input("callback_number", "1", "caller_id")])
            if digits == "2":
                return self._entry_step(call, lang_id, 1, [], [self._input("callback_number", "2", "enter")])
            return self._again(call, lang_id, step, attempt, "invalid_option", shown_keys(digits))
        if step == "entry":
            if not digits:  # just the pound key: nothing entered, not a wrong number
                return self._again(call, lang_id, step, attempt, "no_input", "-")
            number = self._callable(digits, call)
            if number is None:
                return self._again(call, lang_id, step, attempt, "callback_invalid_number", "[redacted]")
            self.book.save_draft(call.sid, {**draft, "number": number})
            event = self._input("callback_entry", "[redacted]", "entered")
            return self._readback_step(call, lang_id, number, 1, [event])
        # readback
        number = draft.get("number")
        if digits == "1" and number:
            return self._book(call, lang_id, draft, number, [self._input("callback_readback", "1", "confirmed")])
        if digits == "2" or not number:
            shown = shown_keys(digits) if digits else "-"
            return self._entry_step(call, lang_id, 1, [], [self._input("callback_readback", shown, "again")])
        return self._again(call, lang_id, step, attempt, "invalid_option", shown_keys(digits))

    def silence(self, call: Call, lang_id: str, step: str, attempt: int) -> VoiceResponse:
        if self._draft(call) is None:
            return self.flow._recover(call, lang_id, "callback step without a draft")
        return self._again(call, lang_id, step, attempt, "no_input", "-")

    def _again(self, call: Call, lang_id: str, step: str, attempt: int, reason: str, shown: str) -> VoiceResponse:
        event = self._input(f"callback_{step}", shown, "invalid_option" if reason != "no_input" else "no_input")
        draft = self._draft(call) or {}
        if attempt >= self.config.input.max_attempts:
            return self._give_up(call, lang_id, draft, [event])
        preamble = [getattr(self.config.prompts, reason)[lang_id]]
        if step == "number":
            return self._number_step(call, lang_id, attempt + 1, preamble, [event])
        if step == "entry":
            return self._entry_step(call, lang_id, attempt + 1, preamble, [event])
        number = draft.get("number")
        if not number:
            return self._entry_step(call, lang_id, 1, preamble, [event])
        return self._readback_step(call, lang_id, number, attempt + 1, [event], preamble)

    def _callable(self, raw: str | None, call: Call) -> str | None:
        """The E.164 number to call back, or None: `callback_number`, and never one of the
        hotline's own — the one this caller dialled, the one our calls come from — (a callback
        to it would ring our own menus)."""
        number = callback_number(raw, self.policy.country)
        ours = {callback_number(n, self.policy.country) for n in (call.called, self.flow.caller_id)}
        return None if number in ours else number

    def _number_step(self, call: Call, lang_id: str, attempt: int, preamble: list[str], events: list[dict]):
        caller = self._callable(call.caller, call)
        if caller is None:  # withheld or not a number we can call: straight to typing one
            return self._entry_step(call, lang_id, attempt, preamble, events)
        self.flow._log(call, events)
        text = self.config.prompts.callback_use_caller_id[lang_id].format(last4=last_digits(caller))
        return render.callback_step(self.config, self.flow.urls, lang_id, "number", attempt, [*preamble, text])

    def _entry_step(self, call: Call, lang_id: str, attempt: int, preamble: list[str], events: list[dict]):
        self.flow._log(call, events)
        texts = [*preamble, self.config.prompts.callback_enter_number[lang_id]]
        return render.callback_step(self.config, self.flow.urls, lang_id, "entry", attempt, texts, num_digits=20)

    def _readback_step(
        self, call: Call, lang_id: str, number: str, attempt: int, events: list[dict], preamble: list[str] = ()
    ):
        self.flow._log(call, events)
        digits = spoken_number(number, self.policy.country)
        texts = [*preamble, self.config.prompts.callback_readback[lang_id].format(digits=digits)]
        return render.callback_step(self.config, self.flow.urls, lang_id, "readback", attempt, texts)

    def _give_up(self, call: Call, lang_id: str, draft: dict, events: list[dict]) -> VoiceResponse:
        """No number after all the attempts: a caller who was waiting goes back to their place
        (or into the queue they were about to join); on a closed line, goodbye."""
        self.book.drop_draft(call.sid)
        events.append(make_event("callback_declined", self.now, reason="no number"))
        sorry = self.config.prompts.callback_no_number[lang_id]
        node = self.plan.node(draft.get("node", ""))
        if (
            draft.get("kind") in ("queue", "peak")
            and isinstance(node, TransferNode)
            and self.plan.hours.is_open(self.now)
        ):
            queue = draft.get("queue") if draft.get("queue") in self.config.queues else node.queue
            arrived = int(draft.get("arrived_ms") or self.now_ms)
            twiml = self.flow._join(call, lang_id, draft["node"], queue, [sorry], events, arrived_ms=arrived)
            self.flow._log(call, events)
            return twiml
        self.flow._log(call, events)
        return render.speak_and_hang_up(self.config, lang_id, [sorry])

    # ----- booking ----------------------------------------------------------------------

    def _book(self, call: Call, lang_id: str, draft: dict, number: str, events: list[dict]) -> VoiceResponse:
        open_now = self.plan.hours.is_open(self.now)
        queue = draft["queue"] if draft.get("queue") in self.config.queues else None
        node = self.plan.node(draft.get("node", ""))
        if queue is None:
            queue = node.queue if isinstance(node, TransferNode) else self.plan.node(self.config.input.agent_node).queue
        opening = None if open_now else self.plan.hours.next_opening(self.now)
        seated = open_now and self.policy.agent_gate
        reference = self.flow.calls.reference(call.sid)
        fresh = Callback(
            id="",
            status="pending" if seated else "scheduled",
            number=number,
            caller=callback_number(call.caller, self.policy.country) or "",
            call_sid=call.sid,
            lang=lang_id,
            queue=queue,
            node=draft.get("node", ""),
            branch=draft.get("branch", "other"),
            arrived_ms=int(draft.get("arrived_ms") or self.now_ms),
            requested_ms=self.now_ms,
            # Not seated: scheduled for the opening, or (no agent gate) for now; either way in
            # the schedule's index, so the dispatcher's sweep seats it should its job be lost.
            scheduled_ms=None if seated else int((opening or self.now).timestamp() * 1000),
            reference=reference,
            updated_ms=self.now_ms,
        )
        callback, created = self.book.request(fresh)
        if created and not seated:
            self.schedule(callback, opening or self.now)
        if not created and callback.status == "scheduled" and seated:
            # Asked again, with the line open, while a retry waits: back in its place now.
            callback = self.desk_seat(callback)
        self.book.drop_draft(call.sid)
        if not created:
            # Asked again: this call's ticket shows the tries made before it asked, too.
            events.extend(past_attempt_events(callback))
        position = self.book.position(callback) if callback.status == "pending" else None
        events.append(
            make_event(
                "callback_requested",
                self.now,
                event_id=f"cb-{callback.id}-requested-{call.sid}",
                callback_id=callback.id,
                number=number,
                queue=callback.queue,
                arrived_at=datetime.fromtimestamp(callback.arrived_ms / 1000, self.now.tzinfo).isoformat(),
                scheduled_for=utc_iso(opening) if opening else None,
                position=position,
                updated=not created,
            )
        )
        self.flow._log(call, events)
        prompts = self.config.prompts
        ref = " ".join(str(callback.reference or reference or ""))
        past_closing = self._past_closing(callback, lang_id) if open_now else None
        if callback.status == "dialling":
            # Asked again while its call rings (open, or an attempt running past closing): it is
            # this caller's turn now, whatever the hours say.
            text = prompts.callback_booked[lang_id].format(last4=last_digits(number), position=1, reference=ref)
        elif past_closing is not None:
            text = prompts.callback_booked_past_closing[lang_id].format(
                last4=last_digits(number), position=position or 1, opening=past_closing, reference=ref
            )
        elif open_now:
            # In line, or (without the agent gate) due now.
            text = prompts.callback_booked[lang_id].format(
                last4=last_digits(number), position=position or 1, reference=ref
            )
        else:  # closed: scheduled for the opening, or in line from before closing
            lang = self.config.languages[lang_id]
            when = describe_opening(opening, self.now, lang) if opening else "—"
            text = prompts.callback_booked_closed[lang_id].format(
                last4=last_digits(number), opening=when, reference=ref
            )
        return render.speak_and_hang_up(self.config, lang_id, [text])

    def _past_closing(self, callback: Callback, lang_id: str) -> str | None:
        """When the callback's estimated wait runs past today's closing: the opening after it,
        as said to the caller (the callback then comes at the caller's turn or then)."""
        closing = self.plan.hours.closing(self.now)
        if closing is None or callback.status != "pending":
            return None
        try:
            ahead = estimate_for(
                self.flow.routing, self.config, member(callback.id), callback.queue, lang_id, self.now.timestamp()
            )
        except RedisError:
            return None
        if not may_run_past(ahead.estimate, self.now.timestamp(), closing.timestamp()):
            return None  # (the same test as before queuing)
        return self.flow._after_closing_text(lang_id, closing)

    def desk_seat(self, callback: Callback) -> Callback:
        moved: list[bool] = []

        def now_in_line(cb: Callback) -> Callback | None:
            if cb.status != "scheduled":
                return None
            cb.status, cb.scheduled_ms, cb.updated_ms = "pending", None, self.now_ms
            moved.append(True)
            return cb

        seated = self.book.update(callback.id, now_in_line) or callback
        if moved:
            flow = self.flow
            event_id = f"cb-{seated.id}-seated-{len(seated.attempts)}-asked"
            note_callback(flow.calls, flow.mark_due, self.now, seated, "callback_seated", event_id)
        return seated

    # ----- a caller whose callback is pending -------------------------------------------

    def pending_notice(self, call: Call, callback: Callback) -> VoiceResponse:
        lang_id, _ = self.plan.language(callback.lang)
        noticed = make_event("callback_pending", self.now, callback_id=callback.id)
        self.flow._log(call, [noticed, self.flow._language_event(lang_id)])
        # Greeted first, in the language of their callback, like every caller.
        texts = [
            self.config.prompts.greeting[lang_id],
            self.config.prompts.callback_pending[lang_id].format(last4=last_digits(callback.number)),
        ]
        urls = self.flow.urls
        return render.offer_or_continue(
            self.config, lang_id, texts, urls.pending(lang_id, callback.id), urls.pending_continue(lang_id)
        )

    def pending_answer(self, call: Call, lang_id: str, callback_id: str, cancel: Callable[[str], object]):
        lang_id, _ = self.plan.language(lang_id)
        prompts = self.config.prompts
        if call.digits == "1":
            # Checked now, not when the question was asked: ops may have cancelled it, or its
            # last attempt failed, while the caller listened.
            current = self.book.get(callback_id)
            if current is None or current.status not in OPEN:
                self.flow._log(call, [self._input("callback_pending", "1", "already_over")])
                return self.flow.main_menu(call, [prompts.callback_over[lang_id]], lang_id)
            self.flow._log(call, [self._input("callback_pending", "1", "kept")])
            hours = self.plan.hours
            when = None
            if current.status == "scheduled" and (current.scheduled_ms or 0) > self.now_ms:  # waits for a time
                when = datetime.fromtimestamp(current.scheduled_ms / 1000, hours.zone)
            elif current.status == "pending" and not hours.is_open(self.now):
                when = hours.next_opening(self.now)  # in line from before closing: called after opening
            if when is not None:
                opening = describe_opening(when, self.now, self.config.languages[lang_id])
                kept = prompts.callback_kept_scheduled[lang_id].format(opening=opening)
                return render.speak_and_hang_up(self.config, lang_id, [kept])
            return render.speak_and_hang_up(self.config, lang_id, [prompts.callback_kept[lang_id]])
        if call.digits == "2":
            result = cancel(callback_id)
            if result == "dialling":  # too late: we are calling them right now
                self.flow._log(call, [self._input("callback_pending", "2", "already_dialling")])
                return render.speak_and_hang_up(self.config, lang_id, [prompts.callback_kept[lang_id]])
            if result != "cancelled":  # over already (failed, done, cancelled by ops) or unknown
                self.flow._log(call, [self._input("callback_pending", "2", "already_over")])
                return self.flow.main_menu(call, [prompts.callback_over[lang_id]], lang_id)
            self.flow._log(call, [self._input("callback_pending", "2", "cancelled")])
            # They answered in this language: on to its main menu, not the language choice.
            return self.flow.main_menu(call, [prompts.callback_cancelled[lang_id]], lang_id)
        # Any other key: maybe not their language (a family member on the same phone), so the
        # language choice, as for any caller.
        return self.flow.start_menu(call, [], lang_id)

    # ----- helpers ----------------------------------------------------------------------

    def _draft(self, call: Call) -> dict | None:
        try:
            return self.book.draft(call.sid)
        except RedisError:
            return None

    def _input(self, node: str, shown: str, result: str) -> dict:
        return make_event("input", self.now, node=node, input=shown, result=result)
