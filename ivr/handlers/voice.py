"""Call-flow webhooks. Each view parses the Twilio form, asks the Flow what happens next, and
returns its TwiML; any unexpected failure still answers the caller (see `_recover_on_error`)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, request, url_for
from twilio.twiml.voice_response import VoiceResponse
from werkzeug.exceptions import HTTPException

from ivr.calllog import RetryNames, make_event
from ivr.menus import render
from ivr.menus.callback_flow import STEPS
from ivr.menus.flow import Call, Flow
from ivr.menus.model import QueueConfig
from ivr.queues.callback_calls import AgentFirstCalls, CallbackCalls
from ivr.queues.connect import AgentCalls
from ivr.security import require_twilio_call
from ivr.services import services

log = logging.getLogger(__name__)

bp = Blueprint("voice", __name__, url_prefix="/voice")
bp.before_request(require_twilio_call)


class FlaskUrls:
    """render.Urls with url_for; one query parameter at most, so Twilio's re-ordering of query
    strings can never break a signature."""

    def language_choice(self, attempt: int, greeted: str | None = None) -> str:
        if greeted:  # in the path: still one query parameter
            return url_for("voice.language_choice", greeted=greeted, attempt=attempt)
        return url_for("voice.language_choice", attempt=attempt)

    def language_silence(self, attempt: int, greeted: str | None = None) -> str:
        if greeted:
            return url_for("voice.language_silence", greeted=greeted, attempt=attempt)
        return url_for("voice.language_silence", attempt=attempt)

    def node(self, lang: str, node_id: str) -> str:
        return url_for("voice.enter", lang=lang, node_id=node_id)

    def choice(self, lang: str, node_id: str, attempt: int) -> str:
        return url_for("voice.choice", lang=lang, node_id=node_id, attempt=attempt)

    def silence(self, lang: str, node_id: str, attempt: int) -> str:
        return url_for("voice.silence", lang=lang, node_id=node_id, attempt=attempt)

    def recorded(self, lang: str, node_id: str) -> str:
        return url_for("voice.recorded", lang=lang, node_id=node_id)

    def queued(self, lang: str, node_id: str) -> str:
        return url_for("voice.queued", lang=lang, node_id=node_id)

    def hold(self, lang: str, queue: str) -> str:
        return url_for("voice.hold", lang=lang, queue=queue)

    def join(self, lang: str, node_id: str, queue: str) -> str:
        return url_for("voice.join", lang=lang, node_id=node_id, queue=queue)

    def connected(self, lang: str, agent_id: str) -> str:
        return url_for("voice.connected", lang=lang, agent_id=agent_id)

    def whisper(self, agent_id: str) -> str:
        return url_for("voice.whisper", agent_id=agent_id)

    def accept(self, agent_id: str) -> str:
        return url_for("voice.accept", agent_id=agent_id)

    def hold_key(self, lang: str, queue: str) -> str:
        return url_for("voice.hold_key", lang=lang, queue=queue)

    def callback_step(self, lang: str, step: str, what: str, attempt: int) -> str:
        return url_for("voice.callback_step", lang=lang, step=step, what=what, attempt=attempt)

    def callback_agent_accept(self, callback_id: str, n: int) -> str:
        return url_for("voice.callback_agent_accept", callback_id=callback_id, n=n)

    def callback_agent_done(self, callback_id: str, n: int) -> str:
        return url_for("voice.callback_agent_done", callback_id=callback_id, n=n)

    def callback_intro(self, callback_id: str, n: int) -> str:
        return url_for("voice.callback_intro", callback_id=callback_id, n=n)

    def pending(self, lang: str, callback_id: str) -> str:
        return url_for("voice.callback_pending", lang=lang, callback_id=callback_id)

    def pending_continue(self, lang: str) -> str:
        return url_for("voice.callback_pending_continue", lang=lang)


def twiml(vr: VoiceResponse) -> Response:
    return Response(str(vr), mimetype="text/xml")


def flow() -> Flow:
    hotline = services()
    return Flow(
        hotline.config.current(),
        hotline.calls,
        FlaskUrls(),
        hotline.clock(),
        hotline.mark_ticket_due,
        hotline.routing,
        hotline.callbacks,
        hotline.schedule_callback,
        retry_names(),
        current_app.config.get("TWILIO_CALLER_ID"),
    )


def callback_calls() -> CallbackCalls:
    hotline = services()
    return CallbackCalls(hotline.callback_desk(), flow(), agent_calls())


def agent_calls() -> AgentCalls:
    hotline = services()
    return AgentCalls(
        hotline.config.current(),
        hotline.routing,
        hotline.calls,
        FlaskUrls(),
        hotline.clock(),
        hotline.mark_ticket_due,
        retry_names(),
    )


def retry_names() -> RetryNames:
    """This request's names for its events, shared by everything that appends during it."""
    names = request.environ.get("hotline.retry_names")
    if names is None:
        names = request.environ["hotline.retry_names"] = RetryNames(request.headers.get("I-Twilio-Idempotency-Token"))
    return names


def call() -> Call:
    return Call.from_form(request.form)


def attempt() -> int:
    try:
        return min(max(int(request.args.get("attempt", "1")), 1), 99)
    except ValueError:
        return 1


@bp.post("/incoming")
def incoming():
    """The number's Voice URL: greeting and language choice."""
    return twiml(flow().incoming(call()))


@bp.post("/language", defaults={"greeted": None})
@bp.post("/<greeted>/language")
def language_choice(greeted: str | None):
    """Language menu Gather action (`greeted`: the caller was greeted in that language already,
    e.g. by the notice of their pending callback)."""
    return twiml(flow().language_choice(call(), attempt(), greeted))


@bp.post("/language/silence", defaults={"greeted": None})
@bp.post("/<greeted>/language/silence")
def language_silence(greeted: str | None):
    """Language menu: the Gather ended with no input."""
    return twiml(flow().language_silence(call(), attempt(), greeted))


@bp.post("/<lang>/node/<node_id>")
def enter(lang: str, node_id: str):
    """Play a node from the start (Redirect target)."""
    return twiml(flow().enter(call(), lang, node_id))


@bp.post("/<lang>/node/<node_id>/choice")
def choice(lang: str, node_id: str):
    """A node's Gather action: a key or words."""
    return twiml(flow().choice(call(), lang, node_id, attempt()))


@bp.post("/<lang>/node/<node_id>/silence")
def silence(lang: str, node_id: str):
    """A node's Gather ended with no input."""
    return twiml(flow().silence(call(), lang, node_id, attempt()))


@bp.post("/<lang>/node/<node_id>/recorded")
def recorded(lang: str, node_id: str):
    """Record action: the message is on the ticket; read back its reference."""
    return twiml(flow().recorded(call(), lang, node_id, request.form))


@bp.post("/<lang>/node/<node_id>/queued")
def queued(lang: str, node_id: str):
    """Enqueue action: the caller left the queue (bridged, hung up, full, error)."""
    token = request.headers.get("I-Twilio-Idempotency-Token")
    return twiml(flow().queued(call(), lang, node_id, request.form, token))


@bp.post("/<lang>/node/<node_id>/join")
def join(lang: str, node_id: str):
    """After the estimate, a caller who stayed on the line joins the queue."""
    return twiml(flow().join(call(), lang, node_id, request.args.get("queue")))


@bp.post("/<lang>/hold/<queue>")
def hold(lang: str, queue: str):
    """Enqueue waitUrl: Twilio loops it while the caller waits."""
    return twiml(flow().hold(call(), lang, queue))


@bp.post("/<lang>/hold/<queue>/key")
def hold_key(lang: str, queue: str):
    """A key pressed during a hold turn: the callback key takes the offer (leaves the queue)."""
    return twiml(flow().hold_key(call(), lang, queue))


@bp.post("/<lang>/callback/<step>/<what>")
def callback_step(lang: str, step: str, what: str):
    """Taking a callback number: `answer` (the Gather's action) or `silence` (its fall-through)
    of the step `number` (the caller ID?), `entry` (type a number) or `readback` (confirm)."""
    the_flow = flow()
    lang, _ = the_flow.plan.language(lang)
    if step not in STEPS or what not in ("answer", "silence") or not the_flow.callbacks_kept:
        return twiml(the_flow._recover(call(), lang, f"unknown callback step {step}/{what}"))
    if what == "answer":
        return twiml(the_flow.callbacks.answer(call(), lang, step, attempt()))
    return twiml(the_flow.callbacks.silence(call(), lang, step, attempt()))


@bp.post("/<lang>/callback/pending/<callback_id>")
def callback_pending(lang: str, callback_id: str):
    """A caller with a pending callback: 1 keeps it, 2 cancels it, anything else goes on."""
    the_flow = flow()
    if not the_flow.callbacks_kept:
        return twiml(the_flow.start_menu(call(), [], lang))
    desk = services().callback_desk()
    return twiml(the_flow.callbacks.pending_answer(call(), lang, callback_id, lambda i: desk.cancel(i, "caller")))


@bp.post("/<lang>/callback/pending-continue")
def callback_pending_continue(lang: str):
    """The caller with a pending callback stayed on the line: on to the menus."""
    return twiml(flow().start_menu(call(), [], lang))


@bp.post("/callback/<callback_id>/<int:n>/answer")
def callback_answer(callback_id: str, n: int):
    """The customer answered callback attempt n (after machine detection)."""
    return twiml(callback_calls().answer(call(), callback_id, n, request.form))


@bp.post("/callback/<callback_id>/<int:n>/status")
def callback_status(callback_id: str, n: int):
    """Status callback of callback attempt n's outbound call."""
    callback_calls().status(call(), callback_id, n, request.form)
    return Response(status=204)


def agent_first_calls() -> AgentFirstCalls:
    hotline = services()
    caller_id = current_app.config.get("TWILIO_CALLER_ID") or ""
    return AgentFirstCalls(hotline.callback_desk(), flow(), FlaskUrls(), caller_id)


@bp.post("/callback/<callback_id>/<int:n>/agent")
def callback_agent(callback_id: str, n: int):
    """Agent first: the reserved agent answered; the callback whisper and the accept key."""
    return twiml(agent_first_calls().agent(call(), callback_id, n))


@bp.post("/callback/<callback_id>/<int:n>/agent/accept")
def callback_agent_accept(callback_id: str, n: int):
    """Agent first: the agent's key; accepted, their call dials the customer."""
    return twiml(agent_first_calls().agent_accept(call(), callback_id, n))


@bp.post("/callback/<callback_id>/<int:n>/intro")
def callback_intro(callback_id: str, n: int):
    """Agent first: on the customer's leg once answered (after machine detection)."""
    return twiml(agent_first_calls().intro(call(), callback_id, n, request.form))


@bp.post("/callback/<callback_id>/<int:n>/agent/done")
def callback_agent_done(callback_id: str, n: int):
    """Agent first: the Dial of the customer ended, on the agent's call."""
    return twiml(agent_first_calls().agent_done(call(), callback_id, n, request.form))


@bp.post("/callback/<callback_id>/<int:n>/agent/status")
def callback_agent_status(callback_id: str, n: int):
    """Agent first: status callback of the agent's outbound call."""
    agent_first_calls().agent_status(call(), callback_id, n)
    return Response(status=204)


@bp.post("/<lang>/connect/<agent_id>")
def connect(lang: str, agent_id: str):
    """The queued caller, redirected by the router: dial the reserved agent (whisper first)."""
    return twiml(agent_calls().connect(call().sid, lang, agent_id))


@bp.post("/<lang>/connect/<agent_id>/done")
def connected(lang: str, agent_id: str):
    """The caller's Dial ended: wrap-up after a conversation, else the next agent."""
    return twiml(agent_calls().connected(call().sid, lang, agent_id, request.form))


@bp.post("/agent/<agent_id>/whisper")
def whisper(agent_id: str):
    """On the agent's leg before the bridge: who calls and why; press a key to accept."""
    return twiml(agent_calls().whisper(agent_id, request.form.get("ParentCallSid", "")))


@bp.post("/agent/<agent_id>/accept")
def accept(agent_id: str):
    """The agent's key: accept bridges the calls, anything else declines."""
    form = request.form
    return twiml(agent_calls().accept(agent_id, form.get("ParentCallSid", ""), form.get("Digits")))


@bp.post("/status")
def status():
    """The number's status callback; Twilio ignores the body."""
    flow().status(call(), request.form)
    return Response(status=204)


@bp.post("/fallback")
def fallback():
    """The number's fallback URL: static apology, no Redis, no database."""
    log.error("fallback used for call %s (ErrorCode %s)", request.form.get("CallSid"), request.form.get("ErrorCode"))
    return twiml(render.fallback(services().config.current().config))


# Legs that must not be sent to the caller menus on an error: the agent's, and the customer's
# inside the agent's Dial (agent-first callbacks).
_AGENT_LEGS = (
    "voice.whisper",
    "voice.accept",
    "voice.callback_agent",
    "voice.callback_agent_accept",
    "voice.callback_agent_done",
    "voice.callback_intro",
)
# Webhooks whose answer Twilio ignores: an error still answers 204, not TwiML.
_STATUS_CALLBACKS = ("voice.status", "voice.callback_status", "voice.callback_agent_status")


@bp.errorhandler(Exception)
def _recover_on_error(error: Exception):
    """A bug or outage must not become Twilio's 'application error': apologise and go to the
    main menu once; if that fails too, the static fallback."""
    if isinstance(error, HTTPException):
        return error
    if not request.environ.get("hotline.twilio_call"):
        # Failed before the request was known to be Twilio's: no TwiML, nothing logged to a call.
        log.warning("webhook %s: %s before the signature check passed", request.path, type(error).__name__)
        return Response("not a verified Twilio request\n", status=403, mimetype="text/plain")
    log.exception("webhook %s failed", request.path)
    if request.endpoint in _AGENT_LEGS:
        # The agent's leg (or the customer's inside the agent's Dial): end it; the Dial's action
        # moves the call on.
        vr = VoiceResponse()
        vr.hangup()
        return twiml(vr)
    plan = services().config.current()
    config = plan.config
    view_args = request.view_args or {}
    lang_id, _ = plan.language(view_args.get("lang"))
    try:
        services().calls.append(call().sid, [make_event("error", services().clock(), reason=type(error).__name__)])
    except Exception:  # noqa: BLE001 - best effort; the caller comes first
        log.warning("could not log the error event")
    if request.endpoint in _STATUS_CALLBACKS:
        return Response(status=204)  # Twilio ignores the body; the sweep settles lost statuses
    if request.endpoint in ("voice.hold", "voice.hold_key"):
        # Inside Twilio's queue (a waitUrl document): keep holding, and the caller their place;
        # a redirect to the menus here would play them inside the queue's loop.
        queue = config.queues.get(view_args.get("queue", ""), QueueConfig())
        return twiml(render.hold(config, lang_id, queue, [config.prompts.hold[lang_id]]))
    if request.endpoint == "voice.enter":
        return twiml(render.fallback(config))
    url = url_for("voice.enter", lang=lang_id, node_id=config.menu.root)
    return twiml(render.speak_and_redirect(config, lang_id, [config.prompts.recover[lang_id]], url))
