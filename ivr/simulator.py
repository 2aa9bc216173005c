"""A call walker: plays Twilio's part against the hotline, following TwiML as Twilio does.

Used by `flask hotline call` / `python -m ivr call` (try a menu change before it goes live) and
by the tests. It signs every request like Twilio, runs verbs top to bottom, lets `<Gather>` fall
through on no input, follows `<Redirect>` and the actions of `<Gather>`, `<Record>` and
`<Enqueue>`, loops the Enqueue waitUrl, sends the final status callback, and flags dead air:
a `<Gather>` that falls off the end of a document, or a hang-up with nothing said first.

Scripted input, one item per `<Gather>` (and optionally per `<Record>`/`<Enqueue>`):
  "1", "*", "123"     keys pressed (Digits)
  None or ""          no input: the Gather times out
  "say:refund please" speech (SpeechResult)
  "hangup"            the caller hangs up here
  "rec:12"            at a <Record>: a 12 s message ("rec:0", or no input, says nothing)
  "queue:bridged"     at an <Enqueue>: QueueResult to report (default: the caller hangs up)
  "queue:press:2"     at an <Enqueue>: press 2 at the first hold turn that gathers a key (the
                      callback offer); a <Leave> in reply leaves the queue (QueueResult=leave)
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urljoin

from twilio.request_validator import RequestValidator

# (url, form, headers) -> (status code, content type, body)
Transport = Callable[[str, dict, dict], tuple[int, str, str]]
GATHER_NESTABLE = {"Say", "Play", "Pause"}
# What a scripted caller may report at an <Enqueue> (Twilio's QueueResult values).
QUEUE_RESULTS = ("bridged", "hangup", "queue-full", "redirected", "system-error", "error", "leave")
WAIT_URL_VERBS = {"Say", "Play", "Pause", "Gather", "Redirect", "Hangup", "Leave"}


class WalkError(AssertionError):
    """The hotline answered something Twilio could not run (or would run into dead air)."""


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str | None
    language: str | None


@dataclass
class WalkResult:
    said: list[Utterance] = field(default_factory=list)
    requests: list[tuple[str, dict]] = field(default_factory=list)
    documents: list[ET.Element] = field(default_factory=list)
    ended: str = ""
    problems: list[str] = field(default_factory=list)
    call_sid: str = ""

    def text(self) -> str:
        return " ".join(u.text for u in self.said)


DTMF = re.compile(r"^[0-9*#]+$")


def gather_input(item: str) -> bool:
    """Whether a script item is something a caller can do at a <Gather>: keys, words, hang up."""
    return item == "hangup" or bool(DTMF.match(item)) or (item.startswith("say:") and bool(item[4:].strip()))


PLAY_S = 30.0  # hold music and other <Play> audio: no length in TwiML; this much each time


def speaking_time_s(text: str) -> float:
    """About how long a <Say> takes: CJK at ~5 characters a second, other scripts ~15."""
    wide = sum(1 for ch in text if ord(ch) >= 0x2E80)
    return 0.3 + wide * 0.2 + (len(text) - wide) / 15


def _number(value: str | None, default: float) -> float:
    try:
        return max(0.0, float(value)) if value is not None else default
    except ValueError:
        return default


class CallWalker:
    def __init__(
        self,
        transport: Transport,
        auth_token: str,
        base_url: str = "https://hotline.example.com",
        caller: str = "+819012345678",
        called: str = "+815012345678",
        call_sid: str | None = None,
        status_before_last_action: bool = False,
        silent_record: str = "action",
        wait_loops: int = 2,
        max_steps: int = 200,
        on_say: Callable[[Utterance], None] | None = None,
        on_input: Callable[[str], str | None] | None = None,
        duration_of: Callable[[], float] | None = None,
    ):
        """`elapsed_s` is the call's own timeline, advanced as Twilio would spend the time:
        speaking each <Say>, each <Pause>, a Gather's timeout on no input, the seconds of a
        recording, the hold loop's turns; the status callback's CallDuration comes from it (the
        simulator reads it to move the hotline's clock) — or from `duration_of`, when the clock the
        hotline keeps is not that timeline."""
        self.transport = transport
        self.validator = RequestValidator(auth_token)
        self.base_url = base_url.rstrip("/")
        self.caller, self.called = caller, called
        self.call_sid = call_sid or "CA" + uuid.uuid4().hex
        self.status_before_last_action = status_before_last_action
        self.silent_record = silent_record  # "action" (current Twilio) or "fallthrough" (older)
        self.wait_loops = wait_loops
        self.max_steps = max_steps
        self.on_say = on_say
        self.on_input = on_input
        self.duration_of = duration_of
        self._seq = 0
        self.elapsed_s = 0.0

    # ----- transport ------------------------------------------------------------------------

    def params(self, **extra: str) -> dict:
        base = {
            "CallSid": self.call_sid,
            "AccountSid": "AC" + "0" * 32,
            "From": self.caller,
            "To": self.called,
            "Caller": self.caller,
            "Called": self.called,
            "CallStatus": "in-progress",
            "ApiVersion": "2010-04-01",
            "Direction": "inbound",
        }
        base.update(extra)
        return base

    def post(self, url: str, form: dict) -> tuple[int, str, str]:
        url = urljoin(self.base_url + "/", url)
        signature = self.validator.compute_signature(url, form)
        return self.transport(url, form, {"X-Twilio-Signature": signature})

    def fetch(self, url: str, form: dict, result: WalkResult) -> tuple[str, ET.Element]:
        full = urljoin(self.base_url + "/", url)
        result.requests.append((full, form))
        status, content_type, body = self.post(full, form)
        if status != 200:
            raise WalkError(f"{full} answered HTTP {status}: {body[:200]}")
        if not content_type.startswith(("text/xml", "application/xml")):
            raise WalkError(f"{full} answered {content_type!r}, not TwiML")
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            raise WalkError(f"{full} answered invalid XML ({exc}): {body[:200]}") from exc
        if root.tag != "Response":
            raise WalkError(f"{full} answered <{root.tag}>, TwiML's root must be <Response>")
        result.documents.append(root)
        return full, root

    def status_callback(self, result: WalkResult, status: str = "completed", duration: int | None = None) -> None:
        if duration is None:
            duration = max(1, round(self.duration_of() if self.duration_of else self.elapsed_s))
        form = self.params(CallStatus=status, CallDuration=str(duration), SequenceNumber=str(self._seq))
        self._seq += 1
        code, _, body = self.post("/voice/status", form)
        result.requests.append((self.base_url + "/voice/status", form))
        if code not in (200, 204):
            raise WalkError(f"/voice/status answered HTTP {code}: {body[:200]}")

    # ----- the call -------------------------------------------------------------------------

    def dial(self, inputs: Iterable[str | None] = ()) -> WalkResult:
        """Place one call; returns what was said and how it ended (status callback sent)."""
        result = WalkResult(call_sid=self.call_sid)
        script = iter(list(inputs))
        url, form = "/voice/incoming", self.params()
        for _ in range(self.max_steps):
            url, root = self.fetch(url, form, result)
            step = self._run(root, url, script, result)
            if step is None:
                break
            url, form = step
        else:
            raise WalkError(f"call did not end within {self.max_steps} documents (a loop?)")
        if result.ended != "status_sent":
            self.status_callback(result)
        return result

    def _next_input(self, script: Iterator[str | None], kind: str) -> str | None:
        if self.on_input is not None:
            return self.on_input(kind)
        return next(script, "hangup")

    def _speak(self, element: ET.Element, result: WalkResult) -> bool:
        if element.tag == "Say":
            utterance = Utterance((element.text or "").strip(), element.get("voice"), element.get("language"))
            result.said.append(utterance)
            self.elapsed_s += speaking_time_s(utterance.text)
            if self.on_say:
                self.on_say(utterance)
            return bool(utterance.text)
        if element.tag == "Pause":
            self.elapsed_s += _number(element.get("length"), 1)
        if element.tag == "Play":
            self.elapsed_s += PLAY_S
        return element.tag == "Play"

    def _run(self, root: ET.Element, url: str, script: Iterator[str | None], result: WalkResult):
        """Run one document. Returns (next url, form) or None when the call is over."""
        spoke = False
        for verb in list(root):
            tag = verb.tag
            if tag in ("Say", "Play"):
                spoke = self._speak(verb, result) or spoke
            elif tag == "Pause":
                self._speak(verb, result)
            elif tag == "Gather":
                for child in verb:
                    if child.tag not in GATHER_NESTABLE:
                        raise WalkError(f"<{child.tag}> cannot be nested in <Gather>")
                    spoke = self._speak(child, result) or spoke
                given = self._next_input(script, "gather")
                if given and not gather_input(given):
                    # A script out of step with the call (a rec: or queue: item here): say so,
                    # rather than press it as keys and walk on from "that is not an option".
                    raise WalkError(
                        f"{given!r} at a <Gather> ({url}): give keys (0-9, *, #), - for no input, say:<words> or hangup"
                    )
                # No input: the Gather waits its timeout; a key or words take a moment.
                self.elapsed_s += 1.0 if given else _number(verb.get("timeout"), 5)
                if given == "hangup":
                    return self._caller_hangs_up(result)
                if given and given.startswith("say:") and "speech" not in (verb.get("input") or "dtmf"):
                    given = None  # a keys-only Gather hears speech as silence
                if not given:
                    if verb.get("actionOnEmptyResult") == "true":
                        return urljoin(url, verb.get("action") or url), self.params()
                    if verb is list(root)[-1]:
                        result.problems.append(f"dead air: <Gather> at {url} fell off the end of the document")
                    continue
                extra = {"FinishedOnKey": "", "msg": "Gather End"}
                if given.startswith("say:"):
                    extra.update(SpeechResult=given[4:], Confidence="0.91")
                else:
                    # As Twilio: the finishing key (default '#') ends the input and is not part of it.
                    finish = verb.get("finishOnKey", "#")
                    if finish and finish in given:
                        given = given[: given.index(finish)]
                        extra["FinishedOnKey"] = finish
                    extra["Digits"] = given
                return urljoin(url, verb.get("action") or url), self.params(**extra)
            elif tag == "Record":
                return self._record(verb, url, script, result)
            elif tag == "Enqueue":
                return self._enqueue(verb, url, script, result)
            elif tag == "Redirect":
                return urljoin(url, (verb.text or "").strip() or url), self.params()
            elif tag in ("Hangup", "Reject"):
                if not spoke:
                    result.problems.append(f"hung up without a word at {url}")
                result.ended = "hangup"
                return None
            elif tag == "Dial":
                result.ended = "dialled"
                return None
            else:
                raise WalkError(f"unsupported verb <{tag}> at {url}")
        if not spoke and not result.ended:
            result.problems.append(f"document at {url} ended the call without a word")
        result.ended = result.ended or "end_of_document"
        return None

    def _caller_hangs_up(self, result: WalkResult):
        result.ended = "caller_hung_up"
        return None

    def _record(self, verb: ET.Element, url: str, script, result: WalkResult):
        action = urljoin(url, verb.get("action") or url)
        peek = self._next_input(script, "record")
        if peek == "hangup":
            recording_sid = "RE" + uuid.uuid4().hex
            form = self.params(
                RecordingUrl=f"https://api.twilio.com/rec/{recording_sid}",
                RecordingDuration="9",
                RecordingSid=recording_sid,
                Digits="hangup",
                CallStatus="completed",
            )
            if self.status_before_last_action:
                self.status_callback(result)  # Twilio may deliver `completed` first (2024 changelog)
                result.ended = "status_sent"
            result.requests.append((action, form))
            code, _, body = self.post(action, form)
            if code != 200:
                raise WalkError(f"{action} answered HTTP {code} to a hang-up during <Record>: {body[:200]}")
            if result.ended != "status_sent":
                result.ended = "caller_hung_up"
            return None
        try:
            # No input at a <Record> is silence (as a Gather's is), not a message.
            seconds = int(peek[4:]) if peek and peek.startswith("rec:") else 0 if not peek else None
        except ValueError:
            seconds = None
        if seconds is None or seconds < 0:
            raise WalkError(f"{peek!r} at a <Record>: give rec:<seconds>, e.g. rec:12 (- or rec:0 for silence)")
        self.elapsed_s += seconds
        if seconds == 0 and self.silent_record == "fallthrough":
            return self._continue_after(verb, url, result)
        recording_sid = "RE" + uuid.uuid4().hex  # one recording: the same sid in its URL
        form = self.params(
            RecordingUrl=f"https://api.twilio.com/rec/{recording_sid}",
            RecordingDuration=str(seconds),
            RecordingSid=recording_sid,
            Digits="#",
        )
        return action, form

    def _continue_after(self, verb: ET.Element, url: str, result: WalkResult):
        """Older Twilio: a silent <Record> falls through to the verbs after it."""
        root = result.documents[-1]
        rest = list(root)[list(root).index(verb) + 1 :]
        tail = ET.Element("Response")
        tail.extend(rest)
        return self._run(tail, url, iter(()), result)

    def _enqueue(self, verb: ET.Element, url: str, script, result: WalkResult):
        peek = self._next_input(script, "queue")
        # "queue:press:2": press 2 at the first hold turn that gathers (the callback offer).
        press = peek.removeprefix("queue:press:") if peek and peek.startswith("queue:press:") else None
        if peek and peek.startswith("queue:") and press is None and peek[6:] not in QUEUE_RESULTS:
            raise WalkError(
                f"{peek!r} at an <Enqueue>: give one of queue:{', queue:'.join(QUEUE_RESULTS)}, queue:press:<key>"
            )
        left = False
        wait_url = verb.get("waitUrl")
        queued_at = self.elapsed_s
        if wait_url:
            for _ in range(self.wait_loops):
                form = self.params(
                    CallStatus="ringing",
                    QueuePosition="1",
                    QueueTime=str(round(self.elapsed_s - queued_at)),
                    QueueSid="QU" + "0" * 32,
                    AvgQueueTime="0",
                    CurrentQueueSize="1",
                    MaxQueueSize="1000",
                )
                _, doc = self.fetch(urljoin(url, wait_url), form, result)
                for element in doc:
                    if element.tag not in WAIT_URL_VERBS:
                        raise WalkError(f"<{element.tag}> is not allowed in a waitUrl document")
                    for said in element.iter() if element.tag == "Gather" else [element]:
                        self._speak(said, result)  # (a Pause in a hold turn: its length passes)
                gather = doc.find("Gather")
                if press and gather is not None and gather.get("action"):
                    _, reply = self.fetch(urljoin(url, gather.get("action")), {**form, "Digits": press}, result)
                    if reply.find("Leave") is not None:
                        left = True
                        break
        if left:
            outcome = "leave"
        else:
            outcome = peek[6:] if peek and peek.startswith("queue:") and press is None else "hangup"
        action = verb.get("action")
        if not action:
            result.ended = "queued"
            return None
        self.elapsed_s += 0 if wait_url else 30  # without a hold loop, some wait all the same
        form = self.params(
            QueueResult=outcome, QueueSid="QU" + "0" * 32, QueueTime=str(round(self.elapsed_s - queued_at))
        )
        if outcome in ("hangup", "bridged"):
            form["CallStatus"] = "completed"
            if self.status_before_last_action:
                self.status_callback(result)
                result.ended = "status_sent"
            result.requests.append((urljoin(url, action), form))
            code, _, _ = self.post(urljoin(url, action), form)
            if code != 200:
                raise WalkError(f"Enqueue action answered HTTP {code}")
            if result.ended != "status_sent":
                result.ended = "caller_hung_up" if outcome == "hangup" else "bridged"
            return None
        return urljoin(url, action), form
