"""Callers walk the shipped menus in each language, as Twilio would run the TwiML."""

from __future__ import annotations

import os
import random

import pytest
import yaml

from ivr.menus.loader import load_config
from tests.conftest import CLOSED_TIME, OPEN_TIME, SHIPPED_CONFIG
from tests.twiml import call_form, parse, says, signed_post, verbs

CONFIG = load_config(SHIPPED_CONFIG)
LANGS = {"ja": ("1", "ja-JP"), "zh": ("2", "cmn-CN"), "en": ("3", "en-US")}
# Main-menu key, then a key in that branch, and the node the caller should reach.
BRANCHES = {
    "account": ("1", "2", "account_login"),
    "payment": ("2", "1", "payment_failed"),
    "refund": ("3", "1", "refund_how"),
    "complaint": ("4", "3", "agent_complaint"),
}


def prompt(name: str, lang: str) -> str:
    return getattr(CONFIG.prompts, name)[lang]


def message(node: str, lang: str) -> str:
    node_config = CONFIG.menu.nodes[node]
    for field in ("message", "prompt"):
        if hasattr(node_config, field):
            return getattr(node_config, field)[lang]
    raise KeyError(node)


def test_incoming_greets_and_offers_each_language_in_its_own_voice(client):
    root = parse(signed_post(client, "/voice/incoming", call_form()))
    assert verbs(root) == ["Gather", "Redirect"]
    gather = root.find("Gather")
    assert gather.get("numDigits") == "1"
    assert gather.get("action") == "/voice/language?attempt=1"
    spoken = [(s.get("language"), s.get("voice"), s.text) for s in says(gather)]
    assert spoken[0] == ("ja-JP", "Polly.Mizuki", CONFIG.prompts.greeting["ja"])
    assert [lang for lang, _, _ in spoken[1:]] == ["ja-JP", "cmn-CN", "en-US"]
    assert root.find("Redirect").text == "/voice/language/silence?attempt=1"


@pytest.mark.parametrize("lang", LANGS)
@pytest.mark.parametrize("branch", BRANCHES)
def test_every_language_reaches_every_branch(walker, ticket_for, lang, branch):
    lang_key, say_code = LANGS[lang]
    main_key, branch_key, target = BRANCHES[branch]
    result = walker().dial([lang_key, main_key, branch_key, "hangup"])
    assert not result.problems
    after_language = result.said[4:]
    assert after_language, "nothing said after the language choice"
    assert {u.language for u in after_language} == {say_code}
    assert message(target, lang) in result.text()
    ticket = ticket_for(result.call_sid)
    assert ticket["language"] == lang
    assert ticket["branch"] == branch
    assert [step["node"] for step in ticket["path"]] == ["language", "main", branch, target]
    assert ticket["path"][1]["inputs"] == [
        {"at": ticket["path"][1]["inputs"][0]["at"], "input": main_key, "result": "choice"}
    ]


def test_callers_of_other_languages_are_welcomed_in_theirs(walker):
    english = walker().dial(["3", "hangup"])
    assert [u.text for u in english.said].count(prompt("greeting", "en")) == 1
    japanese = walker().dial(["1", "hangup"])
    assert prompt("greeting", "ja") in japanese.said[0].text
    assert [u.text for u in japanese.said].count(prompt("greeting", "ja")) == 1


def test_a_wrong_key_on_the_language_menu_is_explained_in_every_language(walker):
    result = walker().dial(["7", "hangup"])
    apologies = [(u.language, u.text) for u in result.said if u.text in CONFIG.prompts.invalid_option.values()]
    assert apologies == [
        ("ja-JP", prompt("invalid_option", "ja")),
        ("cmn-CN", prompt("invalid_option", "zh")),
        ("en-US", prompt("invalid_option", "en")),
    ]


def test_the_repeat_key_on_the_language_menu_repeats_the_choice_without_using_a_try(walker, ticket_for):
    result = walker().dial(["9", "9", "9", "9", "3", "hangup"])
    said = [u.text for u in result.said]
    offers = [lang.choose for lang in CONFIG.languages.values()]
    assert said.count(offers[0]) == 5 and not set(said) & set(CONFIG.prompts.invalid_option.values())
    assert CONFIG.menu.nodes[CONFIG.menu.root].prompt["en"] in said  # English chosen after four repeats
    [language] = [p for p in ticket_for(result.call_sid)["path"] if p["node"] == "language"]
    assert [i["input"] for i in language["inputs"]] == ["repeat_key"] * 4 + ["3"]


def test_menus_accept_speech_with_hints_in_the_callers_language(client, walker, ticket_for):
    root = parse(signed_post(client, "/voice/ja/node/main", call_form()))
    gather = root.find("Gather")
    assert gather.get("input") == "dtmf speech"
    assert gather.get("language") == "ja-JP"
    hints = gather.get("hints").split(", ")
    assert set(o.label["ja"] for o in CONFIG.menu.nodes["main"].options) <= set(hints)
    result = walker().dial(["2", "say:我想问一下退款的事情", "1", "hangup"])
    assert message("refund_how", "zh") in result.text()
    assert ticket_for(result.call_sid)["path"][1]["inputs"][0]["input"] == "speech"


@pytest.mark.parametrize(
    ("node", "heard", "goes_to"),
    [
        ("refund", "the app shows my refund is still pending", None),  # "how" is in "shows"
        ("complaint", "something happened at a restaurant", None),  # "app" is in "happened"
        ("main", "two charges for one coffee", "payment"),  # "charge" begins "charges"
        ("main", "I want my refunds", "refund"),
        ("complaint", "your apps keep crashing", "complaint_service"),
    ],
)
def test_english_speech_matches_words_not_letters_inside_other_words(client, node, heard, goes_to):
    root = parse(signed_post(client, f"/voice/en/node/{node}/choice?attempt=1", call_form(SpeechResult=heard)))
    said = [s.text for s in says(root)]
    if goes_to is None:
        assert said[0] == prompt("invalid_option", "en"), said
    else:
        assert prompt("invalid_option", "en") not in said
        target = CONFIG.menu.nodes[goes_to]
        first = target.prompt["en"] if hasattr(target, "options") else getattr(target, "prompt", {}).get("en")
        assert first in said, said


def test_invalid_key_says_not_an_option_and_repeats_the_menu(walker):
    result = walker().dial(["3", "7", "hangup"])
    text = result.text()
    assert prompt("invalid_option", "en") in text
    assert text.count(message("main", "en")) == 2


def test_absurd_digits_are_an_invalid_option_not_an_error_and_not_on_the_ticket(client, app, ticket_for):
    form = call_form(Digits="4111111111111111" * 20 + "#*")
    root = parse(signed_post(client, "/voice/en/node/main/choice?attempt=1", form))
    gather = root.find("Gather")
    assert gather.get("action") == "/voice/en/node/main/choice?attempt=2"
    assert says(gather)[0].text == prompt("invalid_option", "en")
    signed_post(client, "/voice/status", call_form(CallStatus="completed"))
    [step] = ticket_for(form["CallSid"])["path"]
    assert step["inputs"][0]["input"] == "[redacted]" and step["inputs"][0]["result"] == "invalid_option"


def test_no_input_repeats_the_menu_then_hands_to_an_agent(walker, ticket_for):
    # (No agent is on duty in this test: the caller hears so, stays on the line, and queues.)
    result = walker().dial(["3", None, None, None, None, "queue:hangup"])
    text = result.text()
    assert text.count(prompt("no_input", "en")) == 2
    assert prompt("too_many_attempts", "en") in text
    assert message("agent", "en") in text  # connecting to an agent
    assert not result.problems
    ticket = ticket_for(result.call_sid)
    assert [i["result"] for i in ticket["path"][1]["inputs"]] == ["no_input"] * 3
    assert ticket["outcome"] == "abandoned"


def test_no_input_when_closed_ends_with_the_opening_time_and_goodbye(walker, clock):
    clock.now = CLOSED_TIME
    result = walker().dial(["3", None, None, None])
    text = result.text()
    assert prompt("too_many_attempts", "en") in text
    assert "Monday" in text and "at 9 AM" in text
    assert result.said[-1].text == prompt("goodbye", "en")
    assert result.ended == "hangup" and not result.problems


def test_actionOnEmptyResult_reading_of_no_input_is_handled_too(client):
    root = parse(signed_post(client, "/voice/en/node/payment/choice?attempt=1", call_form()))
    assert says(root.find("Gather"))[0].text == prompt("no_input", "en")


def test_repeat_key_repeats_and_back_key_goes_to_the_parent_menu(walker):
    result = walker().dial(["3", "2", "9", "*", "hangup"])
    text = result.text()
    assert text.count(message("payment", "en")) == 2
    assert text.count(message("main", "en")) == 2
    assert prompt("invalid_option", "en") not in text


def test_the_back_key_at_the_main_menu_says_it_again_and_the_ticket_says_so(walker, ticket_for):
    result = walker().dial(["3", "*", "2", "hangup"])
    assert result.text().count(message("main", "en")) == 2 and prompt("invalid_option", "en") not in result.text()
    path = ticket_for(result.call_sid)["path"]
    assert [p["node"] for p in path] == ["language", "main", "payment"]  # one visit of main, not two
    assert [(i["input"], i["result"]) for i in path[1]["inputs"]] == [("back_key", "repeat"), ("2", "choice")]


def test_info_answer_offers_back_agent_repeat_then_says_goodbye(walker, ticket_for):
    result = walker().dial(["3", "2", "2", None])
    assert message("payment_charged_twice", "en") in result.text()
    assert prompt("info_followup", "en") in result.text()
    assert result.said[-1].text == prompt("goodbye", "en")
    assert result.ended == "hangup" and not result.problems
    assert ticket_for(result.call_sid)["outcome"] == "self_service"


def test_agent_key_in_a_branch_reaches_that_branchs_queue(client):
    # Nobody is on duty, so the caller is told before queuing and may take a callback or leave a
    # message instead.
    root = parse(signed_post(client, "/voice/en/node/payment/choice?attempt=1", call_form(Digits="0")))
    assert verbs(root) == ["Gather", "Redirect"]
    spoken = [s.text for s in says(root.find("Gather"))]
    assert spoken[-3:] == [
        prompt("wait_unknown", "en"),
        prompt("callback_offer", "en").format(key="2"),
        prompt("stay_or_message", "en").format(key="1"),
    ]
    assert root.find("Redirect").text == "/voice/en/node/agent_payment/join?queue=payment"
    root = parse(signed_post(client, root.find("Redirect").text, call_form()))
    assert verbs(root) == ["Enqueue"]
    enqueue = root.find("Enqueue")
    assert enqueue.text == "payment"
    assert enqueue.get("waitUrl") == "/voice/en/hold/payment"
    assert enqueue.get("action") == "/voice/en/node/agent_payment/queued"


def test_locked_account_explains_then_transfers(walker, ticket_for):
    result = walker().dial(["1", "1", "3", None, "queue:bridged"])
    assert message("account_locked", "ja") in result.text()
    assert message("agent_urgent", "ja") in result.text()
    ticket = ticket_for(result.call_sid)
    assert ticket["outcome"] == "transferred" and ticket["branch"] == "account"


def test_hold_loop_for_a_caller_missing_from_our_line_is_a_valid_wait_document(client):
    root = parse(signed_post(client, "/voice/zh/hold/refund", call_form(CallStatus="ringing")))
    assert verbs(root) == ["Say", "Pause"]
    assert root.find("Say").get("language") == "cmn-CN"
    assert root.find("Say").text == prompt("hold", "zh")


def test_queue_full_offers_a_message(client):
    form = call_form(QueueResult="queue-full")
    root = parse(signed_post(client, "/voice/en/node/agent/queued", form))
    gather = root.find("Gather")
    assert says(gather)[0].text == prompt("queue_full", "en")
    assert verbs(root) == ["Gather", "Say", "Hangup"]


@pytest.mark.parametrize(
    "path",
    ["/voice/en/node/no_such_node", "/voice/en/node/no_such_node/choice?attempt=2", "/voice/en/node/gone/silence"],
)
def test_unknown_node_or_language_recovers_to_the_main_menu(client, path):
    root = parse(signed_post(client, path, call_form(Digits="1")))
    gather = root.find("Gather")
    assert gather.get("action").endswith("/node/main/choice?attempt=1")
    assert says(gather)[0].text in CONFIG.prompts.recover.values()


def test_unknown_language_falls_back_to_the_default_language(client):
    root = parse(signed_post(client, "/voice/xx/node/main/silence?attempt=1", call_form()))
    gather = root.find("Gather")
    assert gather.get("action") == "/voice/ja/node/main/choice?attempt=2"
    assert [s.text for s in says(gather)] == [prompt("no_input", "ja"), message("main", "ja")]


def test_node_removed_while_a_caller_is_on_it_recovers(make_app, tmp_path, walker):
    data = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    path = tmp_path / "hotline.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    app = make_app(HOTLINE_CONFIG=str(path))
    client = app.test_client()
    parse(signed_post(client, "/voice/en/node/refund", call_form()))
    # Ops publish a config without the refund status answer while the caller is in the menu.
    data["menu"]["nodes"]["refund"]["options"] = [
        o for o in data["menu"]["nodes"]["refund"]["options"] if o["key"] != "2"
    ]
    del data["menu"]["nodes"]["refund_status"]
    # ... and its words in the prompt (the checker refuses a prompt that offers a key gone).
    prompts = {"en": "Press 1 or 3.", "ja": "1か3を押してください。", "zh": "请按1或3。"}
    data["menu"]["nodes"]["refund"]["prompt"] = prompts
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert app.extensions["hotline"].config.reload_if_changed()
    root = parse(signed_post(client, "/voice/en/node/refund_status", call_form()))
    assert "/node/main/choice" in root.find("Gather").get("action")
    root = parse(signed_post(client, "/voice/en/node/refund/choice?attempt=1", call_form(Digits="2")))
    assert says(root.find("Gather"))[0].text == prompt("invalid_option", "en")


def test_a_broken_config_change_is_refused_and_the_old_one_stays_live(make_app, tmp_path):
    path = tmp_path / "hotline.yaml"
    path.write_text(SHIPPED_CONFIG.read_text(encoding="utf-8"), encoding="utf-8")
    app = make_app(HOTLINE_CONFIG=str(path))
    path.write_text(path.read_text(encoding="utf-8").replace("goto: refund_how", "goto: nowhere"), encoding="utf-8")
    holder = app.extensions["hotline"].config
    live = holder.current().version
    assert holder.reload_if_changed() is False
    assert "refund_how" in holder.current().config.menu.nodes
    parse(signed_post(app.test_client(), "/voice/en/node/refund", call_form()))
    # Ops see on /healthz that their publish did not go live, and why.
    health = app.test_client().get("/healthz").get_json()
    assert health["status"] == "ok" and health["config"] == live
    refused = health["config_refused"]
    assert refused["version"] != live and refused["count"] == len(refused["problems"]) >= 1
    assert "unknown node 'nowhere'" in refused["problems"][0]
    # Fixed and published again: live, and nothing refused any more.
    path.write_text(path.read_text(encoding="utf-8").replace("goto: nowhere", "goto: refund_how"), encoding="utf-8")
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    assert holder.reload_if_changed() is True
    assert "config_refused" not in app.test_client().get("/healthz").get_json()


def test_random_callers_never_hit_dead_air_or_an_error(walker, clock):
    """Fuzz: random keys, silences and speech through the whole tree, open and closed."""
    rng = random.Random(20261122)
    # What a caller can do at each verb (the walker refuses a script out of step with the call).
    choices = {
        "gather": ["1", "2", "3", "4", "5", "0", "9", "*", "#", None, None, "say:refund", "77"],
        "record": ["rec:5", "rec:0", None],
        "queue": [None, "queue:hangup", "queue:bridged", "queue:press:2"],
    }
    for n in range(60):
        clock.now = CLOSED_TIME if n % 3 == 0 else OPEN_TIME
        budget, given = rng.randint(1, 12), []

        def random_caller(kind: str, budget=budget, given=given) -> str | None:
            given.append(rng.choice(choices[kind]) if len(given) < budget else "hangup")
            return given[-1]

        result = walker(on_input=random_caller).dial([])
        assert not result.problems, (given, result.problems)
        assert result.ended in {"hangup", "caller_hung_up", "bridged"}, (given, result.ended)


def _app_with(make_app, tmp_path, edit):
    data = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    edit(data)
    path = tmp_path / "hotline.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return make_app(HOTLINE_CONFIG=str(path))


def test_with_one_language_the_language_menu_is_skipped(make_app, tmp_path):
    def english_only(d):
        d["languages"] = {"en": d["languages"]["en"]}
        d["default_language"] = "en"
        for agent in d["agents"]:
            agent["languages"] = ["en"]
        for texts in _language_texts(d):
            for lang in ("ja", "zh"):
                texts.pop(lang, None)

    client = _app_with(make_app, tmp_path, english_only).test_client()
    root = parse(signed_post(client, "/voice/incoming", call_form(CallStatus="ringing")))
    gather = root.find("Gather")
    assert gather.get("action") == "/voice/en/node/main/choice?attempt=1"  # straight to the main menu
    assert all(s.get("language") == "en-US" for s in root.iter("Say"))


def _language_texts(data):
    """Every {lang: text} mapping in a config's data."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item and set(item) <= {"ja", "zh", "en"} and all(isinstance(v, str | list) for v in item.values()):
                yield item
            else:
                stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def test_a_hangup_leaf_says_goodbye_politely_and_ends_the_call(make_app, tmp_path, walker):
    def with_goodbye(d):
        d["menu"]["nodes"]["goodbye"] = {
            "type": "hangup",
            "message": {
                "ja": "ヘルプはアプリの「サポート」からもご覧いただけます。",
                "zh": "您也可以在应用的“帮助”中找到答案。",
                "en": "You can also find answers under Help in the app.",
            },
        }
        main = d["menu"]["nodes"]["main"]
        main["options"].append(
            {"key": "8", "goto": "goodbye", "label": {"ja": "終了", "zh": "结束通话", "en": "end the call"}}
        )
        for lang, offer in {"ja": "終了は8を。", "zh": "结束通话请按8。", "en": "To end the call, press 8."}.items():
            main["prompt"][lang] += offer

    client = _app_with(make_app, tmp_path, with_goodbye).test_client()
    root = parse(signed_post(client, "/voice/en/node/main/choice?attempt=1", call_form(Digits="8")))
    redirect = root.find("Redirect")
    if redirect is not None:  # moved on to the node
        root = parse(signed_post(client, redirect.text, call_form()))
    assert verbs(root) == ["Say", "Say", "Hangup"]
    assert [s.text for s in says(root)] == [
        "You can also find answers under Help in the app.",
        CONFIG.prompts.goodbye["en"],
    ]


def test_the_walker_plays_no_input_at_a_record_as_silence_and_refuses_a_script_out_of_step(walker, ticket_for):
    """`make call KEYS=3,4,2,-`: silence at the complaint recording is no message (not an
    8-second one); a `rec:` or `queue:` item where the call gathers keys is a script out of step
    with the call, said as such rather than pressed as keys."""
    from ivr.simulator import WalkError

    result = walker().dial(["3", "4", "2", None, "hangup"])
    assert CONFIG.prompts.recording_empty["en"] in [u.text for u in result.said]
    ticket = ticket_for(result.call_sid)
    assert ticket["recordings"] == [] and ticket["outcome"] != "message_left"
    for misplaced in ("rec:5", "queue:press:2", "hello"):
        with pytest.raises(WalkError, match=rf"'{misplaced}' at a <Gather> .*: give keys \(0-9, \*, #\)"):
            walker().dial(["3", misplaced])
    with pytest.raises(WalkError, match=r"'1' at a <Record>: give rec:<seconds>"):
        walker().dial(["3", "4", "2", "1"])
