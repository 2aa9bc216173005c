"""Fold a call's events into the ticket's fields. Pure: same events, same ticket, any order."""

from __future__ import annotations

from datetime import datetime, timedelta

from ivr.menus.flow import TERMINAL_STATUSES

OUTCOMES = (
    "in_progress",
    "self_service",
    "transferred",
    "abandoned",
    "message_left",
    "after_hours",
    "gave_up",
    "hung_up_in_menu",
    "error",
    "missed",
    "callback",
)


def _at(event: dict) -> datetime:
    return datetime.fromisoformat(event["at"])


def summarize(events: list[dict]) -> dict:
    """Ticket fields from events (each: id, at, kind, ...). Events are sorted by time first, so
    out-of-order delivery (a status callback overtaking a Record action) changes nothing."""
    events = sorted(events, key=lambda e: (_at(e), e.get("seq") or 0))
    by_kind: dict[str, list[dict]] = {}
    for event in events:
        by_kind.setdefault(event["kind"], []).append(event)
    start = (by_kind.get("call") or [None])[0]
    final = next((e for e in reversed(by_kind.get("status", [])) if e["status"] in TERMINAL_STATUSES), None)
    ended_at = _at(final) if final else None
    duration = final.get("duration_s") if final else None
    if start:
        started_at = _at(start)
    elif ended_at and duration is not None:
        # No start event (Redis was down at the first webhook): Twilio's duration says when.
        started_at = ended_at - timedelta(seconds=duration)
    else:
        started_at = _at(events[0]) if events else None
    # The numbers from the start event, else from a status callback (they carry them too).
    numbers = start or next((e for e in by_kind.get("status", []) if e.get("caller") or e.get("called")), None) or {}
    if duration is None and started_at and ended_at:
        duration = max(0, round((ended_at - started_at).total_seconds()))
    languages = [e["lang"] for e in events if e["kind"] in ("language", "visit")]
    branches = [e["branch"] for e in by_kind.get("visit", []) if e.get("branch")]
    if not branches and start and start.get("branch"):
        branches = [start["branch"]]  # a callback call walks no menu: its callback's reason
    return {
        "caller": numbers.get("caller", ""),
        "called": numbers.get("called", ""),
        "language": languages[-1] if languages else None,
        "started_at": started_at,
        "ended_at": ended_at,
        "duration_s": duration,
        "status": final["status"] if final else (by_kind.get("status") or [{}])[-1].get("status"),
        "branch": branches[-1] if branches else "other",
        "outcome": _outcome(by_kind, final),
        "path": _path(events),
        "recordings": [
            # `duration` is PRODUCT.md's name for it; `duration_s` says the unit.
            {**{k: e.get(k) for k in ("url", "duration_s", "sid", "node", "at")}, "duration": e.get("duration_s")}
            for e in by_kind.get("recording", [])
        ],
        "queue": _queue_block(by_kind, final),
        "callback": _callback_block(by_kind) or _callback_link(start, by_kind),
        "agent": next((e["agent"] for e in reversed(by_kind.get("agent_accepted", []))), None),
        "disposition": (by_kind.get("disposition") or [{}])[-1].get("disposition"),
        "notes": (by_kind.get("disposition") or [{}])[-1].get("notes"),
    }


def _queue_block(by_kind: dict[str, list[dict]], final: dict | None) -> dict | None:
    """The wait for an agent: where, how long, what was announced next to what happened."""
    joined = by_kind.get("enqueued")
    if not joined:
        return None
    entered = _at(joined[0])
    accepted = by_kind.get("agent_accepted", [])
    results = by_kind.get("queue_result", [])
    if accepted:
        left, result = _at(accepted[-1]), "answered"
    elif results:
        left, result = _at(results[-1]), {"hangup": "abandoned"}.get(results[-1]["result"], results[-1]["result"])
        if result == "leave" and by_kind.get("callback_requested"):
            result = "callback"  # left the queue for a callback that keeps the place
    elif final is not None:
        left, result = _at(final), "abandoned"
    else:
        left, result = None, "waiting"
    estimates = []
    for e in by_kind.get("wait_estimate", []):
        shown = {k: e.get(k) for k in ("at", "position", "point_s", "lo_s", "hi_s")}
        # The event keeps the words compactly ([kind, lo, hi]); the ticket names them as
        # /api/queues does, so ops read one shape in both.
        kind, lo_min, hi_min = (list(e.get("spoken") or []) + [None, None, None])[:3]
        shown["spoken"] = {"kind": kind, "lo_min": lo_min, "hi_min": hi_min} if kind else None
        shown["before_queue"] = bool(e.get("before_queue"))
        # The actual remaining wait next to what was promised: accuracy on real traffic.
        shown["actual_remaining_s"] = round((left - _at(e)).total_seconds()) if left and result == "answered" else None
        estimates.append(shown)
    tried = [
        {"agent": e["agent"], "at": e["at"], "result": e.get("reason", "missed")}
        for e in by_kind.get("agent_missed", [])
    ]
    # A reload dropped the line they waited in: the router moved them (their place kept).
    moves = [
        {"at": e["at"], "from": f"{e['from_queue']}/{e['from_lang']}", "to": f"{e['queue']}/{e['lang']}"}
        for e in by_kind.get("line_moved", [])
    ]
    return {
        "queue": by_kind["line_moved"][-1]["queue"] if moves else joined[0].get("queue"),
        "moved": moves,
        "entered_at": entered.isoformat(),
        "left_at": left.isoformat() if left else None,
        "wait_s": round((left - entered).total_seconds()) if left else None,
        "result": result,
        "estimates": estimates,
        "agents_missed": tried,
    }


def _callback_block(by_kind: dict[str, list[dict]]) -> dict | None:
    """The callback this call asked for: number, when, every attempt and how it ended."""
    requested = by_kind.get("callback_requested")
    if not requested:
        return None
    first = requested[0]
    attempts_seen = by_kind.get("callback_attempt", [])
    # `at` is when the attempt ended (its result); `started_at` when it began (the agent reserved).
    attempts = [{k: e.get(k) for k in ("n", "started_at", "at", "result", "agent", "call_sid")} for e in attempts_seen]
    closed = (by_kind.get("callback_closed") or [None])[-1]
    scheduled = [e.get("scheduled_for") for e in by_kind.get("callback_scheduled", [])]
    scheduled_for = scheduled[-1] if scheduled else requested[-1].get("scheduled_for")
    # The latest step says where it stands; at one instant an attempt comes before the retry it
    # schedules, hence the second key.
    steps = [
        *(((_at(e), 0), "scheduled" if e.get("scheduled_for") else "pending") for e in requested),
        *(((_at(e), 1), "done" if e.get("result") == "connected" else "pending") for e in attempts_seen),
        *(((_at(e), 2), "pending") for e in by_kind.get("callback_seated", [])),
        *(((_at(e), 3), "scheduled") for e in by_kind.get("callback_scheduled", [])),
    ]
    status = max(steps)[1]
    if closed is not None:
        status = closed["status"]
    return {
        "id": first.get("callback_id"),
        "role": "requested",
        "number": first.get("number"),
        "requested_at": first["at"],
        "arrived_at": first.get("arrived_at"),
        "position_when_booked": first.get("position"),
        # Only while it waits for its time: a callback done or over has no time to come.
        "scheduled_for": scheduled_for if status == "scheduled" else None,
        "attempts": attempts,
        # Who talked to the customer: not the agent reserved when they answered, who may have
        # missed the whisper and sent them back to their seat.
        "agent": next((e.get("agent") for e in reversed(by_kind.get("callback_taken", []))), None),
        "status": status,
        "result": status,  # PRODUCT.md's name for where the callback ended (or stands)
        "reason": closed.get("reason") if closed else None,
        "sms_sent": bool(by_kind.get("callback_sms")),
        # Twilio refused the failure text (its code), so the caller was not told by text.
        "sms_refused": next((e.get("code") for e in by_kind.get("callback_sms_refused", [])), None),
    }


def _callback_link(start: dict | None, by_kind: dict[str, list[dict]]) -> dict | None:
    """A call that did not book a callback but is about one: the callback call itself (we
    phoned the customer back), or a call from a number with one pending, kept or cancelled.
    `role` tells them apart from the asking call's block (`requested`)."""
    if start and start.get("callback_id"):
        return {"id": start["callback_id"], "role": "callback_call", "for_call_sid": start.get("callback_for")}
    noticed = by_kind.get("callback_pending")
    if not noticed:
        return None
    answers = [e for e in by_kind.get("input", []) if e.get("node") == "callback_pending"]
    return {
        "id": noticed[0].get("callback_id"),
        "role": "pending_noticed",
        "answer": answers[-1].get("result") if answers else "went_on",  # kept, cancelled, …
    }


def _outcome(by_kind: dict[str, list[dict]], final: dict | None) -> str:
    if final is None:
        return "in_progress"
    if by_kind.get("recording"):
        return "message_left"
    results = [e["result"] for e in by_kind.get("queue_result", [])]
    if "bridged" in results or by_kind.get("agent_accepted") or by_kind.get("agent_call"):
        return "transferred"
    kept = any(
        e.get("node") == "callback_pending" and e.get("result") in ("kept", "already_dialling")
        for e in by_kind.get("input", [])
    )
    if by_kind.get("callback_requested") or kept:
        return "callback"  # booked one, or phoned about the pending one and kept it
    left_for_good = _left_for_the_offer_and_gone(by_kind)
    if by_kind.get("enqueued") and (not results or results[-1] in ("hangup", "redirected") or left_for_good):
        # Queued, never answered, and the last wait ended with the caller gone (the Enqueue
        # action may still come: resynced) — also after leaving the line once and coming back
        # (a callback offer taken, no number given), or hanging up after leaving it for the
        # callback offer without booking one (`leave`: still giving the number, say).
        return "abandoned"
    if any(e.get("before_queue") for e in by_kind.get("wait_estimate", [])) and not by_kind.get("enqueued"):
        # Asked for an agent, heard the wait, hung up before joining: a caller who gave up on
        # waiting, whatever self-service they had heard before.
        return "abandoned"
    if by_kind.get("after_hours"):
        return "after_hours"
    if by_kind.get("gave_up"):
        return "gave_up"
    if by_kind.get("info") or by_kind.get("goodbye"):
        return "self_service"
    if by_kind.get("error"):
        return "error"
    if final["status"] != "completed" and not by_kind.get("visit"):
        return "missed"
    return "hung_up_in_menu"


def _left_for_the_offer_and_gone(by_kind: dict[str, list[dict]]) -> bool:
    """The last wait ended with `leave` (the callback offer taken in line) and the caller went
    no further: no menu after it (a Redis blip sent them to the main menu, say) — gone while
    giving their number."""
    results = by_kind.get("queue_result", [])
    if not results or results[-1]["result"] != "leave":
        return False
    left_at = _at(results[-1])
    return not any(_at(e) > left_at for e in by_kind.get("visit", []))


def _path(events: list[dict]) -> list[dict]:
    """One entry per node visited, with the inputs given there and what they did."""
    path: list[dict] = []
    for event in events:
        if event["kind"] == "visit":
            path.append({"node": event["node"], "at": event["at"], "inputs": []})
        elif event["kind"] == "input":
            if not path or path[-1]["node"] != event["node"]:
                path.append({"node": event["node"], "at": event["at"], "inputs": []})
            path[-1]["inputs"].append({k: event.get(k) for k in ("at", "input", "result")})
    return path
