"""The hotline config as typed, frozen data: languages, prompts, the menu tree, input policy, hours.

Pydantic checks each value's own shape (`extra="forbid"` catches typos); checks that need the
whole tree (references, reachability, translations) live in `ivr.menus.checks`.
"""

from __future__ import annotations

import re
import string
from datetime import date, time
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ivr.menus import counts as counts_mod
from ivr.menus import voices

_FORMATTER = string.Formatter()

Digit = Annotated[str, Field(pattern=r"^[0-9*#]$", description="one DTMF key")]
NodeId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
LangId = Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]


def with_placeholders(*allowed: str, counts: tuple[str, ...] = ()) -> object:
    """Text per language id, e.g. {en: "...", ja: "...", zh: "..."}, whose {placeholders} must be
    among `allowed`: a typo such as {refrence} would crash the .format() on a live call, and
    braces in a text that is never formatted would be read out to callers. Each language's text
    is checked on its own, so an error names its place (prompts.closed.en). Completeness (every
    language) is checked with the whole config. `counts` may carry their unit's singular and
    plural ({wait_min:minute|minutes})."""

    def check(text: str) -> str:
        _check_placeholders(text, set(allowed), frozenset(counts))
        return text

    return dict[LangId, Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(check)]]


LangText = with_placeholders()  # a text without placeholders
ReferenceText = with_placeholders("reference")
Branch = Literal["account", "payment", "refund", "complaint", "agent", "other"]
TIME_FIELDS = ("hour", "hour12", "minute", "minute02", "ampm")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Language(Strict):
    name: str = Field(description="the language's name in itself, e.g. 日本語")
    key: Digit = Field(description="DTMF key that picks it on the language menu")
    choose: str = Field(description="'for English press 3', said in this language")
    say_language: str
    voice: str
    speech_language: str | None = Field(default=None, description="<Gather> speech code; unset disables speech for it")
    weekdays: tuple[str, str, str, str, str, str, str] = Field(description="names of Monday..Sunday as said to callers")
    months: tuple[str, str, str, str, str, str, str, str, str, str, str, str] | None = Field(
        default=None, description="names of January..December, for {month_name} in date_format"
    )
    today: str
    tomorrow: str
    opening_format: str = Field(
        description="the next opening two or more days ahead; fields {day}, {date}, {time}",
    )
    opening_soon_format: str = Field(
        default="{day} {time}",
        description="the next opening today or tomorrow; fields {day} (today/tomorrow), {weekday}, {time}",
    )
    date_format: str = Field(default="{month}/{day}", description="fields {month}, {day}, {month_name}")
    time_format: str = Field(
        default="{hour}:{minute02}",
        description="a time of day: {hour} (0-23), {hour12} (1-12), {minute}, {minute02} (two digits), {ampm}",
    )
    time_format_on_the_hour: str | None = Field(
        default=None, description="a time with no minutes (9 AM, 9時); default: time_format"
    )
    am_pm: tuple[str, str] = Field(default=("AM", "PM"), description="{ampm} before and after noon")
    branch_names: dict[Branch, str] = Field(
        default={}, description="how the branches are named to agents in this language (whisper)"
    )
    language_names: dict[str, str] = Field(
        default_factory=dict,
        description="how this language names the others (and itself) in the agent's whisper; default: their own names",
    )

    @field_validator("say_language")
    @classmethod
    def _known_say_language(cls, code: str) -> str:
        problem = voices.say_language_problem(code)
        if problem:
            raise ValueError(problem)
        return code

    @field_validator("speech_language")
    @classmethod
    def _known_speech_language(cls, code: str | None) -> str | None:
        if code is not None and (problem := voices.speech_language_problem(code)):
            raise ValueError(problem)
        return code

    @model_validator(mode="after")
    def _voice_fits_language(self) -> Language:
        problem = voices.voice_problem(self.voice, self.say_language)
        if problem:
            raise ValueError(f"voice: {problem}")
        return self

    @field_validator("opening_format")
    @classmethod
    def _opening_fields(cls, text: str) -> str:
        _check_placeholders(text, {"day", "date", "time"})
        return text

    @field_validator("opening_soon_format")
    @classmethod
    def _opening_soon_fields(cls, text: str) -> str:
        _check_placeholders(text, {"day", "weekday", "time"})
        return text

    @field_validator("time_format", "time_format_on_the_hour")
    @classmethod
    def _time_fields(cls, text: str | None) -> str | None:
        if text is not None:
            _check_placeholders(text, set(TIME_FIELDS))
        return text

    @model_validator(mode="after")
    def _month_names_given(self) -> Language:
        if "{month_name}" in self.date_format and self.months is None:
            raise ValueError("date_format uses {month_name}: give the 12 'months'")
        _check_placeholders(self.date_format, {"month", "day", "month_name"})
        return self


class GlobalKeys(Strict):
    """Keys that work in every menu. Chosen so no menu option needs them."""

    agent: Digit = "0"
    repeat: Digit = "9"
    back: Digit = "*"

    @model_validator(mode="after")
    def _distinct(self) -> GlobalKeys:
        keys = [self.agent, self.repeat, self.back]
        if len(set(keys)) != len(keys):
            raise ValueError(f"agent, repeat and back must be different keys, got {keys}")
        return self


class InputPolicy(Strict):
    timeout_s: int = Field(strict=True, default=6, ge=2, le=30)
    max_attempts: int = Field(strict=True, default=3, ge=1, le=10)
    speech: bool = Field(strict=True, default=True, description="accept speech where a language has a code")
    keys: GlobalKeys = GlobalKeys()
    agent_node: NodeId = Field(default="agent", description="transfer node for the agent key and the fallback")
    on_max_attempts: Literal["agent_or_goodbye", "goodbye"] = "agent_or_goodbye"


_RANGE = re.compile(r"^(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})$")


class TimeRange(Strict):
    opens: time
    closes: time  # time(0, 0) never appears: 24:00 is stored as time.max

    @classmethod
    def parse(cls, text: str) -> TimeRange:
        match = _RANGE.match(text.strip())
        if not match:
            raise ValueError(f"{text!r} is not a time range like '09:00-18:00'")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
            raise ValueError(f"{text!r} has an invalid time")
        closes = time.max if h2 == 24 else time(h2, m2)
        if closes <= time(h1, m1):
            raise ValueError(f"{text!r} closes before it opens (ranges cannot cross midnight)")
        return cls(opens=time(h1, m1), closes=closes)


def _range(value: object) -> object:
    return TimeRange.parse(value) if isinstance(value, str) else value


# Written as ["09:00-12:00", "13:00-18:00"]; each range is checked on its own, so an error
# names its exact place (hours.weekly.mon[0]).
DayRanges = Annotated[list[Annotated[TimeRange, BeforeValidator(_range)]], Field(max_length=6)]


class HolidayCalendar(Strict):
    country: str = Field(pattern=r"^[A-Z]{2}$")
    subdivision: str | None = None

    @model_validator(mode="after")
    def _known(self) -> HolidayCalendar:
        import holidays

        try:
            holidays.country_holidays(self.country, subdiv=self.subdivision, years=2026)
        except NotImplementedError as exc:
            raise ValueError(f"the holidays package has no calendar for {self.country}") from exc
        return self


class BusinessHours(Strict):
    timezone: str
    weekly: dict[Weekday, DayRanges]
    public_holidays: HolidayCalendar | None = Field(default=None, description="closed on these public holidays")
    closed_dates: list[date] = []
    special_hours: dict[date, DayRanges] = Field(
        default={}, description="hours for one date; overrides weekly, holidays and closed_dates"
    )

    @field_validator("weekly")
    @classmethod
    def _opens_sometimes(cls, weekly: dict) -> dict:
        if not any(weekly.values()):
            raise ValueError("the weekly schedule never opens; give at least one day hours")
        return weekly

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r}") from exc
        return name


class ServiceLevel(Strict):
    """'target' of callers answered within 'answer_within_s' (80/20 is the classic)."""

    answer_within_s: int = Field(strict=True, default=60, ge=5, le=3600)
    target: float = Field(strict=True, default=0.8, gt=0, le=1)


class Overflow(Strict):
    """What happens when the queue is full or the estimate is above `max_wait_s`."""

    max_wait_s: int | None = Field(strict=True, default=None, ge=30, le=4 * 3600)
    action: Literal["message", "queue"] = "message"
    queue: NodeId | None = Field(default=None, description="with action: queue")

    @model_validator(mode="after")
    def _queue_named(self) -> Overflow:
        if (self.action == "queue") != (self.queue is not None):
            raise ValueError("name a 'queue' exactly when the action is 'queue'")
        return self


class QueueConfig(Strict):
    """A skill queue callers wait in for an agent."""

    hold_music_url: str | None = Field(default=None, pattern=r"^https://")
    announce_every_s: int = Field(strict=True, default=60, ge=15, le=600)
    max_size: int = Field(strict=True, default=200, ge=1, le=5000, description="Twilio's <Enqueue> holds 5000 at most")
    skills: list[str] = Field(default=[], description="agents with any of these skills serve it (default: its name)")
    languages: list[LangId] | None = Field(default=None, description="languages served (default: all)")
    priority: int = Field(
        strict=True, default=0, ge=0, le=9, description="higher is served first by agents who serve both"
    )
    service_level: ServiceLevel = ServiceLevel()
    overflow: Overflow = Overflow()


class Agent(Strict):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
    name: str
    phone: str | None = Field(default=None, description="E.164 number the agent answers on")
    client: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Twilio Client identity")
    skills: dict[str, Annotated[int, Field(strict=True, ge=1, le=5)]] = Field(
        min_length=1, description="skill: level 1-5"
    )
    languages: list[LangId] = Field(min_length=1)

    @field_validator("phone")
    @classmethod
    def _e164(cls, phone: str | None) -> str | None:
        if phone is None:
            return None
        import phonenumbers

        try:
            number = phonenumbers.parse(phone, None)
        except phonenumbers.NumberParseException as exc:
            raise ValueError(f"{phone!r} is not an E.164 number like +81312345678") from exc
        if not phonenumbers.is_valid_number(number) or phone != phonenumbers.format_number(
            number, phonenumbers.PhoneNumberFormat.E164
        ):
            raise ValueError(f"{phone!r} is not a valid E.164 number")
        return phone

    @model_validator(mode="after")
    def _reachable(self) -> Agent:
        if not self.phone and not self.client:
            raise ValueError("an agent needs a 'phone' or a 'client' identity to be called on")
        return self


class Routing(Strict):
    ring_timeout_s: int = Field(strict=True, default=20, ge=5, le=60, description="how long an agent's phone rings")
    accept_timeout_s: int = Field(strict=True, default=10, ge=3, le=60, description="time to press the accept key")
    accept_key: Digit = "1"
    wrap_up_s: int = Field(strict=True, default=30, ge=0, le=600, description="after a call, before the next")


class PeakWindow(Strict):
    days: list[Weekday] = Field(min_length=1)
    hours: Annotated[TimeRange, BeforeValidator(_range)]


class Peak(Strict):
    """At peak, or whenever the estimate is above `announce_above_s`, callers hear the estimate
    before they are queued."""

    windows: list[PeakWindow] = []
    announce_above_s: int = Field(strict=True, default=120, ge=0, le=3600)


class CallbackPolicy(Strict):
    """Callbacks that keep the caller's place: when they are offered, how the number is taken,
    how and how often they are dialled (see README, "Callbacks")."""

    enabled: bool = Field(default=True, strict=True)
    key: Digit = Field(default="2", description="the key that takes the callback offer, wherever it is made")
    offer_above_s: int = Field(
        strict=True,
        default=300,
        ge=0,
        le=4 * 3600,
        description="offered before queuing when the estimate is above this",
    )
    offer_while_waiting_above_s: int = Field(
        strict=True,
        default=0,
        ge=0,
        le=4 * 3600,
        description="offered at each wait announcement whose estimate is above this (0: at every announcement)",
    )
    country: str = Field(default="JP", pattern=r"^[A-Z]{2}$", description="region of numbers entered without +")
    dial_mode: Literal["customer_first", "agent_first"] = "customer_first"
    ring_timeout_s: int = Field(
        strict=True, default=30, ge=10, le=120, description="how long the customer's phone rings"
    )
    machine_detection: bool = Field(
        strict=True, default=True, description="an answering machine counts as a failed attempt"
    )
    attempts: int = Field(strict=True, default=3, ge=1, le=10, description="dial attempts before the callback fails")
    retry_after_min: int = Field(strict=True, default=10, ge=1, le=24 * 60, description="between failed attempts")
    calls_per_second: float = Field(
        strict=True,
        default=1.0,
        ge=0,
        le=100,
        description="outbound pacing across all workers (Twilio: 1/s); 0 turns it off",
    )
    agent_gate: bool = Field(
        strict=True,
        default=True,
        description="dial only when an agent is reserved; off: dial when due, then queue by arrival",
    )
    sms_on_failure: bool = Field(strict=True, default=True, description="text the caller after the last failed attempt")


class Option(Strict):
    key: Digit
    goto: NodeId
    label: LangText = Field(description="what the option is called; also a speech hint")
    keywords: dict[LangId, list[str]] = Field(default={}, description="extra words that pick this option by speech")


class NodeBase(Strict):
    branch: Branch | None = Field(default=None, description="the ticket's branch once a caller reaches this node")
    sensitive: bool = Field(strict=True, default=False, description="redact this node's input on tickets")


class MenuNode(NodeBase):
    type: Literal["menu"]
    prompt: LangText
    agent: NodeId | None = Field(
        default=None,
        description="transfer node the agent key reaches here and below (default: input.agent_node)",
    )
    options: list[Option] = Field(min_length=1, max_length=9)


class InfoNode(NodeBase):
    """A self-service answer; then back / agent / repeat / goodbye, or straight on to `next`."""

    type: Literal["info"]
    message: LangText
    next: NodeId | None = None


class RecordNode(NodeBase):
    """Record a message onto the ticket, then read back the ticket reference."""

    type: Literal["record"]
    prompt: LangText
    confirmation: ReferenceText = Field(description="said after recording; {reference} available")
    max_length_s: int = Field(strict=True, default=120, ge=5, le=600)

    @field_validator("confirmation")
    @classmethod
    def _reference(cls, texts: dict[str, str]) -> dict[str, str]:
        for text in texts.values():
            if "{reference}" not in text:
                raise ValueError(f"the caller must hear the reference: put {{reference}} in {text!r}")
        return texts


class TransferNode(NodeBase):
    """Hand the caller to agents in `queue`, within business hours."""

    type: Literal["transfer"]
    queue: NodeId
    prompt: LangText


class HangupNode(NodeBase):
    type: Literal["hangup"]
    message: LangText


Node = Annotated[MenuNode | InfoNode | RecordNode | TransferNode | HangupNode, Field(discriminator="type")]


class Menu(Strict):
    root: NodeId
    nodes: dict[NodeId, Node]


class AfterHours(Strict):
    message_key: Digit = Field(default="1", description="key that starts the message")
    message_node: NodeId | None = Field(
        default="leave_message",
        description="record node offered to callers who reach a closed line; unset: no message",
    )


OpeningText = with_placeholders("opening")
KeyText = with_placeholders("key")
TimeText = with_placeholders("time")
PositionText = with_placeholders("position")
MinutesText = with_placeholders("lo", "hi", counts=("lo", "hi"))
WhisperText = with_placeholders("branch", "language", "wait_min", "reference", "key", counts=("wait_min",))
WhisperBookedAtText = with_placeholders("branch", "language", "booked_at", "reference", "key")
Last4Text = with_placeholders("last4")
DigitsText = with_placeholders("digits")
BookedText = with_placeholders("last4", "position", "reference")
BookedClosedText = with_placeholders("last4", "opening", "reference")
BookedPastClosingText = with_placeholders("last4", "position", "opening", "reference")
KeyOpeningText = with_placeholders("key", "opening")
IntroText = with_placeholders("hotline", "branch", "reference")
HotlineText = with_placeholders("hotline")
SmsText = with_placeholders("hotline", "reference")


class Prompts(Strict):
    """System prompts, each in every language. Placeholders are listed per prompt."""

    greeting: LangText
    invalid_option: LangText
    no_input: LangText
    info_followup: LangText = Field(description="after an answer: back / agent / repeat keys")
    goodbye: LangText
    recover: LangText = Field(description="said when the call lost its place, before the menu")
    closed: OpeningText = Field(description="the line is closed; {opening}")
    closed_offer_message: KeyText = Field(description="how to leave a message; {key} is the key")
    message_saved: LangText = Field(description="a message was recorded but its reference is unknown")
    recording_empty: LangText
    hold: LangText
    queue_full: LangText
    too_many_attempts: LangText
    fallback: LangText = Field(description="said by /voice/fallback when the app failed")
    whisper: WhisperText = Field(
        description="to the agent before the bridge; {branch} {language} {wait_min} {reference} {key}"
    )
    agent_missed: LangText = Field(description="to the caller when the agent did not take the call")
    queue_position: PositionText = Field(description="{position}: the caller's place in line")
    wait_less_than_minute: LangText
    wait_range: MinutesText = Field(description="{lo} to {hi} minutes")
    wait_more_than: MinutesText = Field(description="more than {lo} minutes")
    wait_unknown: LangText = Field(description="nobody can take the call right now; no figure promised")
    closing_soon: TimeText = Field(description="the wait may run past closing at {time}")
    stay_or_message: KeyText = Field(description="before queuing: press {key} for a message, or stay")
    callback_offer: KeyText = Field(description="before queuing and while waiting: {key} for a callback")
    callback_offer_closed: KeyText = Field(description="closed line or full queue: {key} for a callback")
    callback_offer_past_closing: KeyOpeningText = Field(
        description="the wait may run past closing: {key} for a callback, at the caller's turn or at {opening}"
    )
    callback_use_caller_id: Last4Text = Field(description="1: the caller ID ending {last4}; 2: another number")
    callback_enter_number: LangText = Field(description="enter the number, then hash")
    callback_invalid_number: LangText = Field(description="the entered number cannot be called back")
    callback_no_number: LangText = Field(description="no number after all the attempts (then back in line or goodbye)")
    callback_readback: DigitsText = Field(description="{digits} read back one by one; 1 correct, 2 again")
    callback_booked: BookedText = Field(description="booked while open; {last4} {position} {reference}")
    callback_booked_closed: BookedClosedText = Field(description="booked while closed; {last4} {opening} {reference}")
    callback_booked_past_closing: BookedPastClosingText = Field(
        description="booked while open, the wait running past closing; {last4} {position} {opening} {reference}"
    )
    callback_pending: Last4Text = Field(description="a caller with a pending callback: 1 keep, 2 cancel, or stay")
    callback_kept: LangText
    callback_kept_scheduled: OpeningText = Field(
        description="kept, and waiting for a time (the opening, a retry): {opening}, as in callback_booked_closed"
    )
    callback_over: LangText = Field(description="the pending callback asked about ended meanwhile (failed, cancelled)")
    callback_unavailable: LangText = Field(description="the callback key on hold while callbacks cannot be booked")
    callback_cancelled: LangText
    callback_intro: IntroText = Field(description="to the customer who answers a callback")
    callback_whisper: WhisperText = Field(
        description="to the agent before a callback booked under an hour ago; like whisper, {wait_min} since booking"
    )
    callback_whisper_earlier: WhisperBookedAtText = Field(
        description="to the agent before a callback booked an hour ago or more; {booked_at}: its day and time"
    )
    callback_calling_customer: LangText = Field(description="agent-first: to the agent who accepted")
    callback_customer_missed: LangText = Field(description="agent-first: to the agent, the customer was not reached")
    callback_customer_missed_last: LangText = Field(
        description="agent-first: to the agent, the customer was not reached on the last attempt"
    )
    callback_this_is: HotlineText = Field(description="who calls, to whoever answers a callback nobody waits for now")
    callback_not_now: ReferenceText = Field(description="that callback's attempt was given up; it stays booked")
    callback_closed_meanwhile: LangText = Field(description="that callback was done or failed meanwhile")
    callback_goodbye: LangText = Field(description="the goodbye on calls we made (not 'thank you for calling')")
    callback_failed_sms: SmsText = Field(description="text after the last failed attempt; {hotline} {reference}")


class Fallback(Strict):
    dial: str | None = Field(
        default=None,
        pattern=r"^\+[1-9]\d{6,14}$",
        description="E.164 number /voice/fallback connects to when the app fails; unset: goodbye",
    )


class HotlineConfig(Strict):
    name: str | dict[LangId, str] = Field(
        description="the hotline's name said to callers (callback intro, failure text): one text, or one per language"
    )
    default_language: LangId
    languages: dict[LangId, Language] = Field(min_length=1)
    input: InputPolicy = InputPolicy()
    hours: BusinessHours
    after_hours: AfterHours = AfterHours()
    queues: dict[NodeId, QueueConfig] = Field(min_length=1)
    agents: list[Agent] = []
    routing: Routing = Routing()
    peak: Peak = Peak()
    callbacks: CallbackPolicy = CallbackPolicy()
    prompts: Prompts
    menu: Menu
    fallback: Fallback = Fallback()

    def name_in(self, lang_id: str) -> str:
        """The hotline's name in a language (the checks make sure each language has one)."""
        if isinstance(self.name, str):
            return self.name
        return self.name.get(lang_id) or next(iter(self.name.values()), "")


def _check_placeholders(text: str, allowed: set[str], counts: frozenset[str] = frozenset()) -> None:
    """Parse `text` the way str.format will on a live call, so whatever would crash there (a
    typo'd name, a stray brace, a format spec) is refused at load instead. A count in `counts`
    may name its unit in singular and plural, `{wait_min:minute|minutes}`, spoken "1 minute"
    and "3 minutes" (see `ivr.menus.counts`)."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in _FORMATTER.parse(text) if name is not None]
    except ValueError as exc:  # "Single '}' encountered", "expected '}' before end of string"
        raise ValueError(f"{exc} in {text!r}: braces mark placeholders") from None
    if not allowed and not fields and ("{" in text or "}" in text):
        raise ValueError(f"braces in {text!r} would be read out to callers (this text takes no placeholders)")
    allowed_text = ", ".join("{" + a + "}" for a in sorted(allowed)) or "none"
    unknown = {name for name, _, _ in fields} - allowed
    if unknown:
        names = ", ".join("{" + u + "}" for u in sorted(unknown))
        raise ValueError(f"unknown placeholder {names} in {text!r} (allowed: {allowed_text})")
    for name, spec, conv in fields:
        if conv or (spec and (name not in counts or not counts_mod.is_unit_spec(spec))):
            mark = f"!{conv}" if conv else f":{spec}"
            hint = f"; a count names its unit as {{{name}:minute|minutes}}" if name in counts else ""
            raise ValueError(f"{{{name}{mark}}} in {text!r}: write the placeholder as {{{name}}}{hint}")
