"""Pure TwiML builders: config + language + URLs in, `VoiceResponse` out. No I/O, no Flask.

Every `<Gather>` here is followed by verbs that speak (or a `<Redirect>` to a URL that does), so
a caller who says nothing never falls off the end of a document into silence.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

from twilio.twiml.voice_response import Gather, VoiceResponse

from ivr.hours import describe_opening
from ivr.menus.counts import Count
from ivr.menus.model import HotlineConfig, Language, MenuNode, QueueConfig


class Urls(Protocol):
    """Where each webhook lives; implemented with url_for in the handlers."""

    def language_choice(self, attempt: int, greeted: str | None = None) -> str: ...
    def language_silence(self, attempt: int, greeted: str | None = None) -> str: ...
    def node(self, lang: str, node_id: str) -> str: ...
    def choice(self, lang: str, node_id: str, attempt: int) -> str: ...
    def silence(self, lang: str, node_id: str, attempt: int) -> str: ...
    def recorded(self, lang: str, node_id: str) -> str: ...
    def queued(self, lang: str, node_id: str) -> str: ...
    def hold(self, lang: str, queue: str) -> str: ...
    def join(self, lang: str, node_id: str, queue: str) -> str: ...
    def hold_key(self, lang: str, queue: str) -> str: ...
    def callback_step(self, lang: str, step: str, what: str, attempt: int) -> str: ...


def say(target: VoiceResponse | Gather, text: str, lang: Language) -> None:
    target.say(text, voice=lang.voice, language=lang.say_language)


def _gather(
    vr: VoiceResponse,
    config: HotlineConfig,
    lang: Language | None,
    action: str,
    hints: Iterable[str] = (),
) -> Gather:
    """A one-key Gather; with speech when the config and the language (None: keys only) allow."""
    policy = config.input
    # Speech only where there are options to name: an answer's follow-up is keys only.
    hints = list(hints)
    speech = policy.speech and bool(hints) and lang is not None and lang.speech_language is not None
    attrs = {
        "action": action,
        "method": "POST",
        "num_digits": 1,
        # Every key is an answer (the back key is '*', and '#' could be an option), so no key
        # ends the Gather early; numDigits=1 submits on the first key.
        "finish_on_key": "",
        "timeout": policy.timeout_s,
        "action_on_empty_result": False,
    }
    if speech:
        hint_list = [h for h in dict.fromkeys(hints) if 0 < len(h) <= 100][:500]
        attrs.update(input="dtmf speech", language=lang.speech_language, speech_timeout="auto")
        if hint_list:
            attrs["hints"] = ", ".join(hint_list)
    return vr.gather(**attrs)


def option_hints(node: MenuNode, lang_id: str) -> list[str]:
    hints = [o.label[lang_id] for o in node.options]
    for option in node.options:
        hints.extend(option.keywords.get(lang_id, []))
    return hints


def language_menu(
    config: HotlineConfig,
    urls: Urls,
    attempt: int,
    preamble: list[tuple[str, Language]],
    greeted: str | None = None,
) -> VoiceResponse:
    """Each language offers itself in its own voice: '日本語は1を…', '普通话请按2', 'For English…'.
    `greeted`: the language the caller was already greeted in, when not the default's."""
    vr = VoiceResponse()
    # Keys only: speech needs a recognition language, and the caller has not chosen one yet.
    gather = _gather(vr, config, None, urls.language_choice(attempt, greeted))
    for text, lang in preamble:
        say(gather, text, lang)
    for lang in config.languages.values():
        say(gather, lang.choose, lang)
    vr.redirect(urls.language_silence(attempt, greeted), method="POST")
    return vr


def menu(
    config: HotlineConfig, urls: Urls, lang_id: str, node_id: str, node: MenuNode, attempt: int, preamble: list[str]
) -> VoiceResponse:
    lang = config.languages[lang_id]
    vr = VoiceResponse()
    gather = _gather(vr, config, lang, urls.choice(lang_id, node_id, attempt), option_hints(node, lang_id))
    for text in preamble:
        say(gather, text, lang)
    say(gather, node.prompt[lang_id], lang)
    vr.redirect(urls.silence(lang_id, node_id, attempt), method="POST")
    return vr


def info(
    config: HotlineConfig, urls: Urls, lang_id: str, node_id: str, texts: list[str], attempt: int
) -> VoiceResponse:
    """An answer (or just its follow-up), then back / agent / repeat; silence ends politely."""
    return _offer_then_goodbye(config, urls, lang_id, node_id, [*texts, config.prompts.info_followup[lang_id]], attempt)


def _offer_then_goodbye(
    config: HotlineConfig, urls: Urls, lang_id: str, node_id: str, texts: list[str], attempt: int
) -> VoiceResponse:
    """Texts in a keys-only Gather; a caller who says nothing hears goodbye (never dead air)."""
    lang = config.languages[lang_id]
    vr = VoiceResponse()
    gather = _gather(vr, config, lang, urls.choice(lang_id, node_id, attempt))
    for text in texts:
        say(gather, text, lang)
    say(vr, config.prompts.goodbye[lang_id], lang)
    vr.hangup()
    return vr


def info_then(config: HotlineConfig, urls: Urls, lang_id: str, message: str, next_id: str) -> VoiceResponse:
    vr = VoiceResponse()
    say(vr, message, config.languages[lang_id])
    vr.redirect(urls.node(lang_id, next_id), method="POST")
    return vr


def record(
    config: HotlineConfig, urls: Urls, lang_id: str, node_id: str, texts: list[str], max_length_s: int, back_url: str
) -> VoiceResponse:
    """Prompt, beep, record. If the caller says nothing, older Twilio falls through to the verbs
    after <Record> and newer Twilio calls the action with a short recording: both are handled."""
    lang = config.languages[lang_id]
    vr = VoiceResponse()
    for text in texts:
        say(vr, text, lang)
    vr.record(
        action=urls.recorded(lang_id, node_id),
        method="POST",
        max_length=max_length_s,
        timeout=5,
        play_beep=True,
        finish_on_key="1234567890*#",
    )
    say(vr, config.prompts.recording_empty[lang_id], lang)
    vr.redirect(back_url, method="POST")
    return vr


def speak_and_hang_up(
    config: HotlineConfig, lang_id: str, texts: list[str], goodbye: dict[str, str] | None = None
) -> VoiceResponse:
    """Texts, goodbye (on calls we made, `callback_goodbye`: they did not call us), hang up."""
    lang = config.languages[lang_id]
    vr = VoiceResponse()
    for text in [*texts, (goodbye or config.prompts.goodbye)[lang_id]]:
        say(vr, text, lang)
    vr.hangup()
    return vr


def speak(config: HotlineConfig, lang_id: str, texts: list[str]) -> VoiceResponse:
    """Words and nothing after them: in a waitUrl's context the call goes back to the hold loop."""
    lang = config.languages[lang_id]
    vr = VoiceResponse()
    for text in texts:
        say(vr, text, lang)
    return vr


def speak_and_redirect(config: HotlineConfig, lang_id: str, texts: list[str], url: str) -> VoiceResponse:
    lang = config.languages[lang_id]
    vr = VoiceResponse()
    for text in texts:
        say(vr, text, lang)
    vr.redirect(url, method="POST")
    return vr


def enqueue(
    config: HotlineConfig, urls: Urls, lang_id: str, node_id: str, texts: list[str], queue: str
) -> VoiceResponse:
    vr = VoiceResponse()
    for text in texts:
        say(vr, text, config.languages[lang_id])
    vr.enqueue(
        queue,
        action=urls.queued(lang_id, node_id),
        method="POST",
        wait_url=urls.hold(lang_id, queue),
        wait_url_method="POST",
    )
    return vr


def announce_then_queue(
    config: HotlineConfig,
    urls: Urls,
    lang_id: str,
    node_id: str,
    texts: list[str],
    message_key: str | None,
    join_url: str,
    callback_key: str | None = None,
    attempt: int = 1,
    callback_offer: str | None = None,
) -> VoiceResponse:
    """Before queuing: the estimate (and any closing warning), the offers of a callback or a
    message instead, and, for a caller who stays on the line, on into the queue. The callback
    offer is `callback_offer` when given (the wait may run past closing), else the usual one."""
    lang = config.languages[lang_id]
    vr = VoiceResponse()
    target: VoiceResponse | Gather = vr
    if message_key is not None or callback_key is not None:
        target = _gather(vr, config, lang, urls.choice(lang_id, node_id, attempt))
    if callback_key is not None:
        texts = [*texts, callback_offer or config.prompts.callback_offer[lang_id].format(key=callback_key)]
    if message_key is not None:
        texts = [*texts, config.prompts.stay_or_message[lang_id].format(key=message_key)]
    for text in texts:
        say(target, text, lang)
    vr.redirect(join_url, method="POST")
    return vr


def closed(
    config: HotlineConfig,
    urls: Urls,
    lang_id: str,
    node_id: str,
    texts: list[str],
    attempt: int,
    offer_message: bool,
    callback_key: str | None = None,
) -> VoiceResponse:
    """The line is closed (or full): when it opens, then the offers configured: a callback, a
    message."""
    offers = []
    if callback_key is not None:
        offers.append(config.prompts.callback_offer_closed[lang_id].format(key=callback_key))
    if offer_message:
        offers.append(config.prompts.closed_offer_message[lang_id].format(key=config.after_hours.message_key))
    if not offers:
        return speak_and_hang_up(config, lang_id, texts)
    return _offer_then_goodbye(config, urls, lang_id, node_id, [*texts, *offers], attempt)


def hold(
    config: HotlineConfig, lang_id: str, queue: QueueConfig, texts: list[str], offer_url: str | None = None
) -> VoiceResponse:
    """One turn of the waitUrl loop (Twilio re-requests it when the document ends): what there
    is to say this turn, then music or a pause. With `offer_url`, the turn also offers a
    callback: the key works through the music, and without it the turn ends as usual."""
    vr = VoiceResponse()
    target: VoiceResponse | Gather = vr
    if offer_url is not None:
        target = vr.gather(
            action=offer_url, method="POST", num_digits=1, finish_on_key="", timeout=1, action_on_empty_result=False
        )
        texts = [*texts, config.prompts.callback_offer[lang_id].format(key=config.callbacks.key)]
    for text in texts:
        say(target, text, config.languages[lang_id])
    if queue.hold_music_url:
        target.play(queue.hold_music_url)
    else:
        target.pause(length=queue.announce_every_s)
    return vr


def leave_queue() -> VoiceResponse:
    """In the waitUrl: leave Twilio's queue; its Enqueue action says what comes next."""
    vr = VoiceResponse()
    vr.leave()
    return vr


def _step_gather(vr: VoiceResponse, config: HotlineConfig, action: str, num_digits: int = 1) -> Gather:
    """Keys only: a number is never taken by speech (nor stored as a transcript)."""
    attrs: dict[str, object] = {"action": action, "method": "POST", "action_on_empty_result": False}
    if num_digits == 1:
        attrs.update(num_digits=1, finish_on_key="", timeout=config.input.timeout_s)
    else:
        attrs.update(num_digits=num_digits, finish_on_key="#", timeout=max(config.input.timeout_s, 10))
    return vr.gather(**attrs)


def callback_step(
    config: HotlineConfig, urls: Urls, lang_id: str, step: str, attempt: int, texts: list[str], num_digits: int = 1
) -> VoiceResponse:
    """One step of taking a callback number (the caller-ID offer, entering a number, the read
    back): the texts in a keys-only Gather; silence comes back to the same step."""
    lang = config.languages[lang_id]
    vr = VoiceResponse()
    gather = _step_gather(vr, config, urls.callback_step(lang_id, step, "answer", attempt), num_digits)
    for text in texts:
        say(gather, text, lang)
    vr.redirect(urls.callback_step(lang_id, step, "silence", attempt), method="POST")
    return vr


def offer_or_continue(
    config: HotlineConfig, lang_id: str, texts: list[str], action: str, continue_url: str
) -> VoiceResponse:
    """A one-key question; a caller who says nothing carries on to `continue_url`."""
    lang = config.languages[lang_id]
    vr = VoiceResponse()
    gather = _step_gather(vr, config, action)
    for text in texts:
        say(gather, text, lang)
    vr.redirect(continue_url, method="POST")
    return vr


# A callback booked this long ago is told to the agent by its time ("booked on Tuesday, December
# 1, at 8:40 PM"), not as "booked 660 minutes ago": an overnight booking is hard to hear in minutes.
BOOKED_AT_AFTER_MIN = 60


def agent_whisper(
    config: HotlineConfig,
    template: dict[str, str],
    lang_id: str,
    branch: str,
    caller_lang_id: str,
    wait_min: int,
    reference: int | None,
    accept_url: str,
    booked_at: str = "",
) -> VoiceResponse:
    """To an agent before a call: who calls and why (`template`: the whisper or a callback
    whisper, in the agent's language), then the accept key; no key ends the agent's leg."""
    lang = config.languages[lang_id]
    caller_lang = config.languages.get(caller_lang_id)
    text = template[lang_id].format(
        branch=lang.branch_names.get(branch, branch),
        language=lang.language_names.get(caller_lang_id) or (caller_lang.name if caller_lang else caller_lang_id),
        wait_min=Count(max(0, wait_min)),
        booked_at=booked_at,
        reference=" ".join(str(reference or "")),
        key=config.routing.accept_key,
    )
    vr = VoiceResponse()
    gather = vr.gather(
        action=accept_url, method="POST", num_digits=1, timeout=config.routing.accept_timeout_s, finish_on_key=""
    )
    say(gather, text, lang)
    vr.hangup()
    return vr


def callback_whisper(
    config: HotlineConfig,
    lang_id: str,
    branch: str,
    caller_lang_id: str,
    requested_ms: int,
    now_ms: int,
    reference: int | None,
    accept_url: str,
) -> VoiceResponse:
    """The whisper before a callback: how long ago it was booked, or, past an hour, when (the
    day and time in the hotline's zone, as openings are told)."""
    # At least 1: "booked 0 minutes ago" tells an agent nothing a minute would not.
    wait_min = max(1, round((now_ms - requested_ms) / 60000))
    if wait_min < BOOKED_AT_AFTER_MIN:
        template, booked_at = config.prompts.callback_whisper, ""
    else:
        zone = ZoneInfo(config.hours.timezone)
        booked, now = (datetime.fromtimestamp(ms / 1000, zone) for ms in (requested_ms, now_ms))
        template = config.prompts.callback_whisper_earlier
        booked_at = describe_opening(booked, now, config.languages[lang_id])
    return agent_whisper(
        config, template, lang_id, branch, caller_lang_id, wait_min, reference, accept_url, booked_at=booked_at
    )


def agent_language(config: HotlineConfig, languages: Iterable[str]) -> str:
    """The language an agent hears: their first one the hotline speaks."""
    return next((lg for lg in languages if lg in config.languages), config.default_language)


def fallback(config: HotlineConfig) -> VoiceResponse:
    """Static apology in every language; connects to the backup number when one is configured."""
    vr = VoiceResponse()
    for lang_id, lang in config.languages.items():
        say(vr, config.prompts.fallback[lang_id], lang)
    if config.fallback.dial:
        vr.dial(config.fallback.dial)
    else:
        vr.hangup()
    return vr


def empty() -> VoiceResponse:
    return VoiceResponse()
