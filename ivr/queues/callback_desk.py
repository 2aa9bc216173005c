"""What happens to a callback after it is booked, shared by the RQ jobs, the outbound call's
webhooks and the ops API: seat it at its time, start and finish dial attempts, retry within
business hours or give up, cancel. Every step is an event on the ticket of the call that asked
for the callback, so the ticket tells the whole story."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from redis.client import Pipeline

from ivr.calllog import CallLog, make_event, utc_iso
from ivr.menus.runtime import Plan
from ivr.privacy import mask_number
from ivr.queues.callbacks import OPEN, Callback, CallbackBook, member
from ivr.queues.state import RoutingState

log = logging.getLogger(__name__)

# Attempt results that say nothing about the customer (our side failed): not counted.
NOT_COUNTED = frozenset({"agent_missed", "agent_hung_up", "agent_unreachable", "released", "closed", "paused"})
# ... and not even towards the bound below: Twilio refused our account (dialling paused). However
# long that lasts, the callback waits for it to be fixed.
NOT_TRIED = frozenset({"paused"})
# Attempts we gave up on ourselves, whose call may still be answered (`answered_late`).
GIVEN_UP = frozenset({"released", "closed", "no_result"})
# However often our side fails, a callback is not tried forever: after this many attempts of
# any kind beyond the configured ones it fails (and the caller is texted, where configured).
MAX_UNCOUNTED_ATTEMPTS = 10


def note_callback(
    calls: CallLog,
    mark_due: Callable[[str, Pipeline], None],
    now: datetime,
    callback: Callback,
    kind: str,
    event_id: str | None = None,
    **data: object,
) -> None:
    """An event on the ticket of every call that asked for this callback (each ticket synced)."""
    event = make_event(kind, now, event_id=event_id, callback_id=callback.id, **data)
    for call_sid in callback.calls:
        calls.append(call_sid, [event], also=lambda pipe, sid=call_sid: mark_due(sid, pipe))


def _utc(iso: str | None) -> str | None:
    """An attempt's stored local ISO time as the ticket's UTC form."""
    return utc_iso(datetime.fromisoformat(iso)) if iso else None


def attempt_noted(callback: Callback, attempt: dict) -> dict:
    """The fields of an ended attempt's `callback_attempt` event (its id among them)."""
    return {
        "event_id": f"cb-{callback.id}-attempt-{attempt['n']}",
        "n": attempt["n"],
        "result": attempt["result"],
        "agent": attempt.get("agent") or None,
        "call_sid": attempt.get("call_sid"),
        "started_at": _utc(attempt.get("at")),
    }


def past_attempt_events(callback: Callback) -> list[dict]:
    """The callback's finished attempts as the events their ends noted on the tickets of the
    calls that had asked for it by then: for a call that asks for it again, so its ticket tells
    the callback's whole story too (same ids: noted twice, they count once)."""
    return [
        make_event(
            "callback_attempt",
            datetime.fromisoformat(attempt.get("ended_at") or attempt["at"]),
            **attempt_noted(callback, attempt),
        )
        for attempt in callback.attempts
        if attempt.get("result")
    ]


class CallbackDesk:
    def __init__(
        self,
        plan: Plan,
        book: CallbackBook,
        routing: RoutingState,
        calls: CallLog,
        now: datetime,
        mark_due: Callable[[str, Pipeline], None],
        schedule: Callable[[Callback, datetime], None],
        notify_failed: Callable[[Callback, Pipeline], None],
    ):
        self.plan, self.book, self.routing, self.calls, self.now = plan, book, routing, calls, now
        self.policy = plan.config.callbacks
        self.mark_due, self.schedule, self.notify_failed = mark_due, schedule, notify_failed

    @property
    def now_ms(self) -> int:
        return int(self.now.timestamp() * 1000)

    # ----- the ticket -----------------------------------------------------------------------

    def note(self, callback: Callback, kind: str, event_id: str | None = None, **data: object) -> None:
        """An event on the ticket of every call that asked for this callback."""
        note_callback(self.calls, self.mark_due, self.now, callback, kind, event_id, **data)

    # ----- into line ------------------------------------------------------------------------

    def seat(self, callback_id: str, on_dialling: Callable[[Pipeline, Callback], None] | None = None) -> str:
        """Its time has come (the line opened, a retry is due): back into line with its original
        arrival, or straight to dialling without the agent gate — `on_dialling` then queues the
        dial job in the same transaction, so a callback is never left dialling with no job.
        Out of hours: the next opening."""
        hours = self.plan.hours
        if not hours.is_open(self.now):
            opening = hours.next_opening(self.now)
            current = self.book.get(callback_id)
            if current is None or current.status != "scheduled" or opening is None:
                return "not scheduled"
            self._reschedule(current, opening, "closed")
            return "rescheduled"
        target = "pending" if self.policy.agent_gate else "dialling"
        paused = None if self.policy.agent_gate else self.book.dialling_paused()
        if paused is not None:
            # No gate, and Twilio refused our account a moment ago: no attempt now (it would be
            # refused alike), due again when the pause ends.
            current = self.book.get(callback_id)
            if current is None or current.status != "scheduled":
                return "not scheduled"
            self._reschedule(current, self.now + timedelta(seconds=paused[1]), "paused")
            return "rescheduled"
        moved: list[bool] = []

        def into_line(cb: Callback) -> Callback | None:
            if cb.status != "scheduled":
                return None
            cb.status, cb.scheduled_ms, cb.updated_ms = target, None, self.now_ms
            if target == "dialling":
                cb.attempts.append(self._new_attempt(cb, None))
            moved.append(True)
            return cb

        def dial_job(pipe: Pipeline, cb: Callback) -> None:
            if cb.status == "dialling" and on_dialling is not None:
                on_dialling(pipe, cb)

        seated = self.book.update(callback_id, into_line, also=dial_job)
        if seated is None or not moved:  # already seated (a second job, or the sweep came first)
            return "not scheduled"
        self.note(seated, "callback_seated", event_id=f"cb-{seated.id}-seated-{len(seated.attempts)}")
        return target

    def _reschedule(self, callback: Callback, when: datetime, why: str) -> None:
        def later(cb: Callback) -> Callback | None:
            if cb.status not in OPEN or cb.status == "dialling" and why == "closed":
                return None
            cb.status, cb.scheduled_ms, cb.agent, cb.updated_ms = (
                "scheduled",
                int(when.timestamp() * 1000),
                None,
                self.now_ms,
            )
            return cb

        updated = self.book.update(callback.id, later)
        if updated is not None and updated.status == "scheduled":
            self.schedule(updated, when)
            self.note(updated, "callback_scheduled", scheduled_for=utc_iso(when), reason=why)

    # ----- attempts ---------------------------------------------------------------------

    def _new_attempt(self, cb: Callback, agent_id: str | None) -> dict:
        # The dial mode is the attempt's, fixed as it starts: a reload that switches it must not
        # make a retry look for the call at the other end (and place it again) or count it wrong.
        return {"n": len(cb.attempts) + 1, "agent": agent_id, "at": self.now.isoformat(), "mode": self.policy.dial_mode}

    def reserve(self, callback_id: str, agent_id: str) -> Callback | None:
        """The router reserved `agent_id` for this callback (its seat left the line): a new
        attempt starts. None when the callback is no longer pending (cancelled meanwhile)."""

        def start(cb: Callback) -> Callback | None:
            if cb.status != "pending":
                return None
            cb.status, cb.agent, cb.updated_ms = "dialling", agent_id, self.now_ms
            cb.attempts.append(self._new_attempt(cb, agent_id))
            return cb

        updated = self.book.update(callback_id, start)
        return updated if updated is not None and updated.status == "dialling" and updated.agent == agent_id else None

    def record_dial(self, callback_id: str, n: int, field: str, value: object) -> Callback | None:
        """Write one fact of attempt n to the outbox (dial started, Twilio's call sid)."""

        def put(cb: Callback) -> Callback | None:
            if not cb.attempts or cb.attempts[-1]["n"] != n:
                return None
            if field == "call_sid" and cb.attempts[-1].get("call_sid") not in (None, "", value):
                return None  # the attempt's call is another's (two runs dialled): the first stays
            cb.attempts[-1][field] = value
            cb.updated_ms = self.now_ms
            return cb

        def placed(pipe: Pipeline, cb: Callback) -> None:
            if field == "call_sid" and value:
                self.book.note_placed_in(pipe, str(value), self.now_ms)

        return self.book.update(callback_id, put, also=placed)

    def attempt_over(
        self,
        callback_id: str,
        n: int,
        result: str,
        call_sid: str | None = None,
        final: bool = False,
        not_before: datetime | None = None,
    ) -> str:
        """Attempt n ended without a conversation. The reserved agent is freed; the callback is
        retried after the configured spacing within business hours, or fails after the last
        attempt (or at once when `final`: the number cannot be called). Results in NOT_COUNTED
        (our side failed) put it back in its place at once, or at `not_before` (dialling is
        paused, or Twilio keeps failing) through a seat job that keeps its original arrival.

        What comes next is written with the result, in one compare-and-set: a retry's time (so
        the dispatcher's sweep seats it even if this process dies before its job is queued) and
        the failure text's job (so it is queued exactly when the callback fails)."""
        outcome: dict[str, str] = {}
        retry_at = self._retry_time()
        due_again = max(not_before or self.now, self.now)

        def finish(cb: Callback) -> Callback | None:
            if not cb.dialling(n):
                return None
            attempt = cb.attempts[-1]
            if attempt.get("result"):
                return None  # already settled (the other reading of Twilio's callbacks came first)
            attempt.update(result=result, ended_at=self.now.isoformat())
            if call_sid:
                attempt.setdefault("call_sid", call_sid)
            counted = [a for a in cb.attempts if a.get("result") not in NOT_COUNTED]
            cb.agent, cb.updated_ms = None, self.now_ms
            tried = [a for a in cb.attempts if a.get("result") not in NOT_TRIED]
            if len(tried) >= self.policy.attempts + MAX_UNCOUNTED_ATTEMPTS:
                cb.status, cb.reason, cb.scheduled_ms = "failed", "too_many_tries", None
                outcome["next"] = "failed"
            elif result in NOT_COUNTED:
                later = due_again > self.now  # not back in line before then (Twilio is failing)
                cb.status = "pending" if self.policy.agent_gate and not later else "scheduled"
                cb.scheduled_ms = None if cb.status == "pending" else int(due_again.timestamp() * 1000)
                outcome["next"] = "requeued"
            elif final or len(counted) >= self.policy.attempts:
                cb.status, cb.reason, cb.scheduled_ms = "failed", result, None
                outcome["next"] = "failed"
            else:
                cb.status, cb.scheduled_ms = "scheduled", int(retry_at.timestamp() * 1000)
                outcome["next"] = "retry"
            outcome["agent"] = attempt.get("agent") or ""
            return cb

        def text_on_failure(pipe: Pipeline, cb: Callback) -> None:
            if cb.status == "failed" and self.policy.sms_on_failure:
                self.notify_failed(cb, pipe)
            if call_sid:
                self.book.note_placed_in(pipe, call_sid, self.now_ms)

        updated = self.book.update(callback_id, finish, also=text_on_failure)
        if not outcome:
            return "stale"
        assert updated is not None
        self._free_agent(outcome["agent"], updated)
        self.note(updated, "callback_attempt", **attempt_noted(updated, updated.attempts[-1]))
        log.info(
            "callback %s to %s: attempt %d %s -> %s",
            updated.id,
            mask_number(updated.number),
            n,
            result,
            outcome["next"],
        )
        if outcome["next"] == "retry":
            self.schedule(updated, retry_at)
            self.note(updated, "callback_scheduled", scheduled_for=utc_iso(retry_at), reason="retry")
        elif outcome["next"] == "requeued" and updated.status == "scheduled":
            self.schedule(updated, due_again)
        elif outcome["next"] == "failed":
            self.note(
                updated, "callback_closed", event_id=f"cb-{updated.id}-closed", status="failed", reason=updated.reason
            )
        return outcome["next"]

    def connected(self, callback_id: str, n: int, agent_id: str | None, agent_on_line: bool = True) -> Callback | None:
        """The customer is on the line: the callback is done. `agent_on_line`: and talking to
        the agent (agent first); customer first, the agent is still to take the whisper, and
        the connection notes who did (`callback_taken`)."""

        def done(cb: Callback) -> Callback | None:
            if not cb.dialling(n):
                return None
            cb.attempts[-1].update(result="connected", ended_at=self.now.isoformat())
            cb.status, cb.agent, cb.updated_ms = "done", agent_id or cb.agent, self.now_ms
            return cb

        updated = self.book.update(callback_id, done)
        if updated is None or updated.status != "done" or updated.attempts[-1].get("result") != "connected":
            return None
        self.note(
            updated,
            "callback_attempt",
            event_id=f"cb-{updated.id}-attempt-{n}",
            n=n,
            result="connected",
            agent=updated.agent,
            call_sid=updated.attempts[-1].get("call_sid"),
            started_at=_utc(updated.attempts[-1].get("at")),
        )
        self.note(updated, "callback_closed", event_id=f"cb-{updated.id}-closed", status="done", agent=updated.agent)
        if agent_on_line and updated.agent:
            self.note(updated, "callback_taken", event_id=f"cb-{updated.id}-taken-{n}", agent=updated.agent)
        return updated

    def answered_late(self, callback_id: str, n: int, call_sid: str) -> Callback | None:
        """The customer answered attempt n after we had given up on it (its reservation timed
        out, say): they are on the line now, so the callback is done and they wait as a caller.
        Not an attempt the call's own end already settled (its completed status overtook this
        answer): that customer is gone, and the retry stands."""

        def late(cb: Callback) -> Callback | None:
            if cb.status not in ("pending", "scheduled"):
                return None
            if not any(a["n"] == n and a.get("result") in GIVEN_UP for a in cb.attempts):
                return None
            for a in cb.attempts:
                if a["n"] == n:
                    a.update(result="answered_late", call_sid=call_sid, ended_at=self.now.isoformat())
            cb.status, cb.agent, cb.updated_ms = "done", None, self.now_ms
            return cb

        updated = self.book.update(callback_id, late)
        if updated is None or updated.status != "done":
            return None
        self.note(
            updated, "callback_attempt", event_id=f"cb-{updated.id}-attempt-{n}-late", n=n, result="answered_late"
        )
        self.note(updated, "callback_closed", event_id=f"cb-{updated.id}-closed", status="done", reason="answered_late")
        return updated

    def cancel(self, callback_id: str, by: str) -> str:
        """Cancel an open callback: 'cancelled', 'dialling' (too late: it is being placed),
        'closed' (already over) or 'unknown'."""
        seen: dict[str, str] = {}

        def stop(cb: Callback) -> Callback | None:
            seen["status"] = cb.status
            if cb.status not in ("pending", "scheduled"):
                return None
            cb.status, cb.reason, cb.updated_ms = "cancelled", by, self.now_ms
            return cb

        updated = self.book.update(callback_id, stop)
        if updated is None:
            return "unknown"
        if seen["status"] == "dialling":
            return "dialling"
        if updated.status != "cancelled" or seen["status"] not in ("pending", "scheduled"):
            return "closed"
        self.note(updated, "callback_closed", event_id=f"cb-{updated.id}-closed", status="cancelled", reason=by)
        return "cancelled"

    # ----- helpers ----------------------------------------------------------------------

    def _free_agent(self, agent_id: str, callback: Callback) -> None:
        """The agent was only reserved (the customer never reached them): available again."""
        if agent_id:
            self.routing.transition(agent_id, member(callback.id), ["reserved"], "available", self.now_ms)

    def _retry_time(self) -> datetime:
        """The next attempt: after the spacing, and inside business hours."""
        when = self.now + timedelta(minutes=self.policy.retry_after_min)
        hours = self.plan.hours
        if hours.is_open(when):
            return when
        return hours.next_opening(when) or when


def attempt_mode(policy, attempt: dict | None) -> str:  # noqa: ANN001 - the callbacks config
    """The dial mode an attempt was started in (the config's for attempts from before it was kept)."""
    return (attempt or {}).get("mode") or policy.dial_mode
