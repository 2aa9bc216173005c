"""A broken config is refused with the file, the line, the YAML path and the reason."""

from __future__ import annotations

import re
import subprocess
import sys
import typing

import pytest
import yaml
from pydantic import BaseModel

from ivr.menus.loader import ConfigError, load_config, parse_config
from ivr.menus.model import HotlineConfig, TimeRange
from ivr.settings import SettingsError
from tests.conftest import ROOT, SHIPPED_CONFIG

SHIPPED = SHIPPED_CONFIG.read_text(encoding="utf-8")


def broken(edit) -> list[str]:
    data = yaml.safe_load(SHIPPED)
    edit(data)
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "hotline.yaml")
    return caught.value.problems


def stale_key_aside(problems: list[str]) -> list[str]:
    """The problems but the three prompts still saying key 3 (the key a test edited away)."""
    stale = [p for p in problems if "says key 3, which is no option" in p]
    assert len(stale) == 3, problems  # one per language
    return [p for p in problems if p not in stale]


def only(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


def test_the_shipped_config_is_valid_and_complete():
    config = load_config(SHIPPED_CONFIG)
    assert set(config.languages) == {"ja", "zh", "en"}
    assert {lang.say_language for lang in config.languages.values()} == {"ja-JP", "cmn-CN", "en-US"}
    main_targets = {o.goto for o in config.menu.nodes["main"].options}
    assert {"account", "payment", "refund", "complaint", "agent"} <= main_targets
    assert config.hours.timezone == "Asia/Tokyo"


def test_unknown_node_reference_names_file_line_and_path():
    def edit(d):
        d["menu"]["nodes"]["payment"]["options"][1]["goto"] = "charged_twice_typo"

    problems = broken(edit)
    assert any(
        p.startswith("hotline.yaml:") and "menu.nodes.payment.options[1].goto: unknown node 'charged_twice_typo'" in p
        for p in problems
    ), problems


def test_line_numbers_point_at_the_offending_line():
    text = SHIPPED.replace("max_attempts: 3", "max_attempts: 0")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "hotline.yaml")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "max_attempts: 0" in row)
    assert only(caught.value.problems).startswith(f"hotline.yaml:{line}: input.max_attempts: ")


def test_duplicate_option_keys():
    def edit(d):
        d["menu"]["nodes"]["refund"]["options"][2]["key"] = "1"

    problems = broken(edit)
    assert "menu.nodes.refund.options[2].key: duplicate key '1' (also options[0])" in only(stale_key_aside(problems))


def test_option_key_clashing_with_a_global_key():
    def edit(d):
        d["menu"]["nodes"]["refund"]["options"][2]["key"] = "*"

    assert "is the back key in every menu" in only(stale_key_aside(broken(edit)))


def test_duplicate_yaml_keys_are_not_silently_overwritten():
    text = SHIPPED.replace("  timeout_s: 6\n", "  timeout_s: 6\n  timeout_s: 8\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "hotline.yaml")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row == "  timeout_s: 8")
    assert (
        only(caught.value.problems)
        == f"hotline.yaml:{line}: input.timeout_s: duplicate key 'timeout_s' (first at line {line - 1})"
    )


def test_a_duplicate_yaml_key_deep_in_the_menu_is_named_by_its_path():
    old = "        en: Connecting you to a refund specialist.\n"
    text = SHIPPED.replace(old, old + "        en: Again.\n")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "hotline.yaml")
    assert ": menu.nodes.agent_refund.prompt.en: duplicate key 'en'" in only(caught.value.problems)


def test_unreachable_node():
    def edit(d):
        d["menu"]["nodes"]["orphan"] = {"type": "hangup", "message": {"ja": "さようなら", "zh": "再见", "en": "Bye"}}

    assert "menu.nodes.orphan: unreachable" in only(broken(edit))


def test_cycle_without_exit():
    def edit(d):
        nodes = d["menu"]["nodes"]
        nodes["loop_a"] = {
            "type": "menu",
            "prompt": {"ja": "a", "zh": "a", "en": "a"},
            "options": [{"key": "1", "goto": "loop_b", "label": {"ja": "b", "zh": "b", "en": "b"}}],
        }
        nodes["loop_b"] = {
            "type": "menu",
            "prompt": {"ja": "b", "zh": "b", "en": "b"},
            "options": [{"key": "1", "goto": "loop_a", "label": {"ja": "a", "zh": "a", "en": "a"}}],
        }
        nodes["main"]["options"].append({"key": "5", "goto": "loop_a", "label": {"ja": "x", "zh": "x", "en": "x"}})

    problems = broken(edit)
    assert any("menu.nodes.loop_a: cycle without exit" in p for p in problems), problems
    assert any("menu.nodes.loop_b: cycle without exit" in p for p in problems), problems


def test_next_chain_that_loops_forever():
    def edit(d):
        d["menu"]["nodes"]["account_register"]["next"] = "account_login"
        d["menu"]["nodes"]["account_login"]["next"] = "account_register"

    assert any("'next' loops forever" in p for p in broken(edit))


def test_missing_translation():
    def edit(d):
        del d["menu"]["nodes"]["refund_status"]["message"]["zh"]

    assert "menu.nodes.refund_status.message: missing translation for zh" in only(broken(edit))


def test_a_branch_unnamed_in_a_language_is_refused():
    def edit(d):
        del d["languages"]["zh"]["branch_names"]["payment"]

    assert "languages.zh.branch_names: missing names for payment" in only(broken(edit))

    def no_names(d):
        del d["languages"]["ja"]["branch_names"]

    assert "missing names for account, payment, refund, complaint, agent, other" in only(broken(no_names))


def test_the_hotline_name_is_one_text_or_one_per_language():
    def edit(d):
        del d["name"]["zh"]

    assert "name: missing translation for zh" in only(broken(edit))
    data = yaml.safe_load(SHIPPED)
    data["name"] = "PayApp"  # a brand said the same in every language
    config = parse_config(yaml.safe_dump(data, allow_unicode=True), "hotline.yaml")
    assert config.name_in("ja") == config.name_in("en") == "PayApp"
    assert load_config(SHIPPED_CONFIG).name_in("zh") == "Payment App客户服务中心"


def test_zh_CN_is_refused_with_the_code_twilio_uses():
    def edit(d):
        d["languages"]["zh"]["say_language"] = "zh-CN"

    problems = broken(edit)
    assert any(
        "languages.zh.say_language: unknown <Say> language code 'zh-CN'; Twilio uses 'cmn-CN'" in p for p in problems
    )


def test_voice_that_does_not_speak_the_language():
    def edit(d):
        d["languages"]["ja"]["voice"] = "Polly.Joanna"

    assert "does not speak ja-JP" in only(broken(edit))


@pytest.mark.parametrize("hours", ["25:00-26:00", "9-18", "18:00-09:00"])
def test_invalid_times(hours):
    def edit(d):
        d["hours"]["weekly"]["mon"] = [hours]

    assert "hours.weekly.mon" in only(broken(edit))


def test_unknown_time_zone():
    def edit(d):
        d["hours"]["timezone"] = "Asia/Tokio"

    assert "hours.timezone: unknown time zone 'Asia/Tokio'" in only(broken(edit))


def test_typo_in_a_setting_name():
    def edit(d):
        d["input"]["timout_s"] = 5

    assert "input.timout_s: unknown setting (typo?)" in only(broken(edit))


def test_unknown_node_type():
    def edit(d):
        d["menu"]["nodes"]["refund_how"]["type"] = "infos"

    assert "menu.nodes.refund_how" in only(broken(edit))


def test_the_app_refuses_to_start_on_an_invalid_config(make_app, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(SHIPPED.replace("goto: refund_how", "goto: nowhere"), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        make_app(HOTLINE_CONFIG=str(path))
    assert str(path) in str(caught.value)


def test_the_app_refuses_to_start_without_an_auth_token(make_app):
    with pytest.raises(SettingsError, match="TWILIO_AUTH_TOKEN"):
        make_app(TWILIO_AUTH_TOKEN="")


def test_check_command_exit_codes_and_output(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "ivr", "check", str(SHIPPED_CONFIG)], capture_output=True, text=True, cwd=ROOT
    )
    assert ok.returncode == 0, ok.stderr
    assert "OK - 3 languages" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(SHIPPED.replace("timezone: Asia/Tokyo", "timezone: Mars/Olympus"), encoding="utf-8")
    failed = subprocess.run([sys.executable, "-m", "ivr", "check", str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert failed.returncode == 1
    assert f"{bad}:" in failed.stderr and "unknown time zone 'Mars/Olympus'" in failed.stderr
    assert failed.stderr.splitlines()[-1].startswith(f"{bad}: 1 problem(s) in the settings themselves (")


def test_the_checker_says_when_its_list_may_go_on():
    """Field errors stop the whole-config checks (they need a config that parses): ops must not
    read '2 problem(s)' as the full list and meet the next error only after fixing those."""
    both = SHIPPED.replace("timezone: Asia/Tokyo", "timezone: Asia/Tokio").replace(
        "goto: payment_charged_twice", "goto: charged_twice", 1
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(both, "hotline.yaml")
    assert [p.split(": ", 1)[1] for p in caught.value.problems] == ["hours.timezone: unknown time zone 'Asia/Tokio'"]
    assert not caught.value.complete
    assert "node references" in caught.value.summary()
    fixed = both.replace("timezone: Asia/Tokio", "timezone: Asia/Tokyo")
    with pytest.raises(ConfigError) as caught:
        parse_config(fixed, "hotline.yaml")
    assert caught.value.complete and caught.value.summary() == "2 problem(s)"
    assert [p.split(": ", 2)[2] for p in caught.value.problems] == [
        "unknown node 'charged_twice'",
        "unreachable: no menu option or 'next' leads here",
    ]


def test_impossible_dates_are_reported_not_crashed_on():
    text = SHIPPED.replace("2026-12-31, 2027", "2026-13-31, 2027")
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "hotline.yaml")
    assert "hours.closed_dates[0]: " in only(caught.value.problems)


def test_message_key_must_not_be_a_global_key():
    def edit(d):
        d["after_hours"]["message_key"] = "9"

    assert "after_hours.message_key: key '9' is already a global key" in only(broken(edit))


def test_confirmation_must_read_back_the_reference():
    def edit(d):
        d["menu"]["nodes"]["complaint_service"]["confirmation"]["en"] = "Thank you."

    assert "menu.nodes.complaint_service.confirmation" in only(broken(edit))


def test_shipped_queues_agents_and_peak_windows():
    config = load_config(SHIPPED_CONFIG)
    assert config.queues["urgent"].priority == 9
    assert {a.id for a in config.agents} == {"a101", "a102", "a103", "a201"}
    assert len(config.peak.windows) == 2


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["agents"].append(dict(d["agents"][0])), "agents[4].id: duplicate agent id 'a101'"),
        (lambda d: d["agents"][3].update(phone="+8112"), "agents[3].phone: '+8112' is not a valid E.164 number"),
        (lambda d: d["agents"][0].pop("client"), "agents[0]: an agent needs a 'phone' or a 'client'"),
        (lambda d: d["agents"][0].update(languages=["ko"]), "agents[0].languages: unknown language 'ko'"),
        (
            lambda d: d["queues"]["general"]["overflow"].update(action="queue", queue="account"),
            "queues.general.overflow.queue: overflow loops: general -> account -> general",
        ),
        (
            lambda d: d["queues"]["refund"].update(overflow={"action": "queue", "queue": "nowhere"}),
            "queues.refund.overflow.queue: unknown queue 'nowhere'",
        ),
        (lambda d: d["queues"]["complaint"].update(skills=["legal"]), "queues.complaint: no agent has a skill"),
        (lambda d: d["peak"]["windows"][0].update(hours="12:00-11:00"), "peak.windows[0].hours"),
    ],
)
def test_queue_and_agent_mistakes_are_refused(edit, expected):
    problems = broken(edit)
    assert any(expected in p for p in problems), problems


def test_callback_settings_are_checked():
    def clash(d):
        d["callbacks"]["key"] = "1"  # the message key

    assert "callbacks.key: key '1' is also after_hours.message_key" in only(broken(clash))

    def unknown_mode(d):
        d["callbacks"]["dial_mode"] = "both"

    assert "callbacks.dial_mode: Input should be 'customer_first' or 'agent_first'" in only(broken(unknown_mode))

    def ungated_agent_first(d):
        d["callbacks"].update(dial_mode="agent_first", agent_gate=False)

    assert "callbacks.agent_gate: agent_first dialling calls the reserved agent" in only(broken(ungated_agent_first))

    def region(d):
        d["callbacks"]["country"] = "ZZ"

    assert "callbacks.country: phonenumbers knows no region 'ZZ'" in only(broken(region))


def test_a_file_not_in_utf8_is_refused_with_its_place(tmp_path):
    path = tmp_path / "sjis.yaml"
    path.write_bytes("# 設定\nname: テスト\n".encode("shift_jis"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert only(caught.value.problems) == f"{path}:1: not UTF-8 text (byte 2): save the file as UTF-8"


def test_braces_in_a_text_that_takes_no_placeholders_are_refused_at_their_language():
    text = SHIPPED.replace("Thank you for calling", "Thank you for calling {hotlinename},", 1)
    assert text != SHIPPED
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "hotline.yaml")
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "{hotlinename}" in row)
    problem = only(caught.value.problems)
    assert problem.startswith(f"hotline.yaml:{line}: prompts.greeting.en: ")
    assert "unknown placeholder {hotlinename}" in problem and "(allowed: none)" in problem

    def in_a_message(d):
        d["menu"]["nodes"]["payment_failed"]["message"]["en"] += " Ref {reference}."

    assert "menu.nodes.payment_failed.message.en: unknown placeholder {reference}" in only(broken(in_a_message))


def test_a_typo_in_a_placeholder_is_refused_where_placeholders_are_taken():
    def edit(d):
        d["prompts"]["closed"]["zh"] = d["prompts"]["closed"]["zh"].replace("{opening}", "{openin}")

    problem = only(broken(edit))
    assert "prompts.closed.zh: unknown placeholder {openin}" in problem and "(allowed: {opening})" in problem


def test_a_stray_brace_or_a_format_spec_that_would_crash_the_call_is_refused_at_its_place():
    def stray(d):
        d["prompts"]["queue_position"]["en"] = "You are number {position in line."

    problem = only(broken(stray))
    assert "prompts.queue_position.en: expected '}' before end of string" in problem

    def spec_on_a_name(d):
        d["prompts"]["closed"]["en"] = "We open {opening:>20}."

    problem = only(broken(spec_on_a_name))
    assert "prompts.closed.en: {opening:>20} in 'We open {opening:>20}.': write the placeholder as {opening}" in problem

    def half_a_unit(d):
        d["prompts"]["whisper"]["en"] = d["prompts"]["whisper"]["en"].replace(
            "{wait_min:minute|minutes}", "{wait_min:min}"
        )

    problem = only(broken(half_a_unit))
    assert "prompts.whisper.en: {wait_min:min} in" in problem
    assert "a count names its unit as {wait_min:minute|minutes}" in problem

    def doubled_braces_never_formatted(d):
        d["prompts"]["goodbye"]["en"] = "Goodbye {{friend}}."

    assert "prompts.goodbye.en: braces in 'Goodbye {{friend}}.' would be read out" in only(
        broken(doubled_braces_never_formatted)
    )


def test_counts_say_their_unit_in_the_singular_for_one():
    from ivr.menus.counts import Count

    assert [f"{Count(n):minute|minutes}" for n in (0, 1, 2, 11)] == ["0 minutes", "1 minute", "2 minutes", "11 minutes"]
    assert f"待ち時間{Count(1)}分" == "待ち時間1分"


def test_a_misindented_line_is_called_an_indentation_problem():
    lines = SHIPPED.splitlines()
    at = next(i for i, row in enumerate(lines) if row.strip() == "account_register:")
    lines[at] = lines[at][2:]  # moved two spaces left
    with pytest.raises(ConfigError) as caught:
        parse_config("\n".join(lines), "hotline.yaml")
    assert "indentation: this line does not line up with the block above it" in only(caught.value.problems)


@pytest.mark.parametrize("quote", ['"', "'"])
def test_a_quote_left_open_is_named_at_its_own_line_not_where_yaml_gives_up(quote):
    """YAML reads an unclosed quoted text on over the lines below and fails 20-30 lines later,
    usually blaming indentation: the checker names the line that opened the quote."""
    line = "    zh: 感谢您致电Payment App客户服务中心。"
    lines = SHIPPED.splitlines()
    at = lines.index(line)
    lines[at] = line.replace("zh: ", f"zh: {quote}")
    with pytest.raises(ConfigError) as caught:
        parse_config("\n".join(lines), "hotline.yaml")
    problem = only(caught.value.problems)
    assert problem.startswith(f"hotline.yaml:{at + 1}: prompts.greeting.zh: a quoted text is not closed on this line")
    # A text that opens and closes its quote, or runs on with escapes and doubled quotes, is fine.
    lines[at] = line.replace("zh: ", 'zh: "') + '\\"…"'
    lines[at + 1] = lines[at + 1].replace("en: ", "en: 'it''s ") + "'"
    parse_config("\n".join(lines), "hotline.yaml")


@pytest.mark.parametrize(
    ("line", "slip", "reason"),
    [
        ("announce_above_s: 120", "announce_above_s: true", "peak.announce_above_s: must be a whole number, not true"),
        ("max_attempts: 3", 'max_attempts: "3"', "input.max_attempts: must be a whole number, not '3' (written in"),
        (
            "agent_gate: true",
            "agent_gate: on weekdays",
            "callbacks.agent_gate: must be true or false, not 'on weekdays'",
        ),
    ],
)
def test_a_setting_written_as_something_else_is_refused_not_converted(line, slip, reason):
    """`true` would have been read as 1 second and "3" as 3: a slip, more likely than meant."""
    assert line in SHIPPED
    with pytest.raises(ConfigError) as caught:
        parse_config(SHIPPED.replace(line, slip, 1), "hotline.yaml")
    assert reason in only(caught.value.problems)


def test_a_colon_inside_an_unquoted_text_says_to_quote_it():
    text = SHIPPED.replace("en: Sorry, something went wrong on our side.", "en: Note: sorry, it went wrong.", 1)
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "hotline.yaml")
    assert "put the whole text in quotes" in only(caught.value.problems)


def test_field_rules_are_said_in_words_not_regular_expressions():
    def bad_id(d):
        nodes = d["menu"]["nodes"]
        nodes["refund-status"] = nodes.pop("refund_status")
        for option in nodes["refund"]["options"]:
            if option["goto"] == "refund_status":
                option["goto"] = "refund-status"

    problems = broken(bad_id)
    assert any("menu.nodes.refund-status: 'refund-status' is not valid here: must be lower-case" in p for p in problems)
    assert not any("[key]" in p or "pattern" in p for p in problems), problems

    def unquoted_key(d):
        d["menu"]["nodes"]["refund"]["options"][0]["key"] = 1

    assert 'must be text: quote it, e.g. "1"' in only(broken(unquoted_key))


def test_a_mistyped_next_is_an_unknown_node_not_also_a_cycle():
    def edit(d):
        d["menu"]["nodes"]["account_locked"]["next"] = "agent_urgnet"

    problems = broken(edit)
    assert any("account_locked.next: unknown node 'agent_urgnet'" in p for p in problems)
    assert not any("cycle" in p for p in problems), problems


def test_a_mistyped_root_is_one_problem_not_every_node_unreachable():
    def edit(d):
        d["menu"]["root"] = "mian"

    assert "menu.root: unknown node 'mian'" in only(broken(edit))


def test_two_options_of_a_menu_may_not_share_a_spoken_word():
    def edit(d):
        options = d["menu"]["nodes"]["refund"]["options"]
        options[1].setdefault("keywords", {}).setdefault("en", []).append(options[0]["label"]["en"])

    assert "also selects options[0]: one word, one option" in only(broken(edit))


def test_a_menu_prompt_must_tell_every_language_of_every_key():
    """An option added with only the English prompt rewritten: Japanese and Mandarin callers
    would never hear of key 7."""

    def edit(d):
        refund = d["menu"]["nodes"]["refund"]
        refund["options"].append({"key": "7", "goto": "main", "label": {"ja": "戻る", "zh": "返回", "en": "back"}})
        refund["prompt"]["en"] += " For the main menu, press 7."

    problems = broken(edit)
    assert sorted(p.split(": ", 2)[1] for p in problems) == [
        "menu.nodes.refund.prompt.ja",
        "menu.nodes.refund.prompt.zh",
    ]
    assert all("never says key 7 (options[" in p for p in problems)


def test_the_readme_shows_what_the_checker_really_prints():
    """The README's examples name lines of the shipped config: they must follow its edits."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = SHIPPED.splitlines()
    at = next(i for i, row in enumerate(lines) if row.strip() == "account_register:")
    lines[at] = lines[at][2:]
    mistakes = [
        SHIPPED.replace("goto: payment_charged_twice", "goto: charged_twice", 1),
        SHIPPED.replace("  max_attempts: 3\n", "  max_attempts: 3\n  max_attempts: 4\n", 1),
        "\n".join(lines),
    ]
    for text in mistakes:
        with pytest.raises(ConfigError) as caught:
            parse_config(text, "config/hotline.yaml")
        first = caught.value.problems[0]
        shown = first.split(" (YAML: ")[0]  # the README elides PyYAML's own words
        assert f"`{shown}" in readme, first


def _models_in(annotation) -> list[type[BaseModel]]:  # noqa: ANN001 - any typing annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models_in(arg)]


def test_the_readme_reference_names_every_setting():
    """Ops write configs from the README's table: a setting (or a required prompt) the model has
    and the table never names is one they meet first as an error."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in table.splitlines():
        if match := re.match(r"\| (.+?) \| .+ \|$", line):
            for section in re.findall(r"`([a-z_]+)", match.group(1)):
                rows[section] = rows.get(section, "") + line
    written_as_text = {TimeRange}  # "09:00-18:00" in the file: opens/closes are no YAML keys
    unnamed = []
    for section, field in HotlineConfig.model_fields.items():
        row = rows.get(section)
        if row is None:
            unnamed.append(section)
            continue
        todo, seen = _models_in(field.annotation), set(written_as_text)
        while todo:
            model = todo.pop()
            if model in seen:
                continue
            seen.add(model)
            for name, sub in model.model_fields.items():
                if not re.search(rf"\b{name}\b", row):
                    unnamed.append(f"{section}: {name} ({model.__name__})")
                todo += _models_in(sub.annotation)
    assert unnamed == []


def test_a_prompt_still_saying_a_removed_option_is_refused():
    """Option 4 removed, its words left: callers pressing 4 would hear 'that is not an option'."""

    def edit(d):
        d["menu"]["nodes"]["payment"]["options"] = [
            o for o in d["menu"]["nodes"]["payment"]["options"] if o["key"] != "4"
        ]
        del d["menu"]["nodes"]["payment_cross_border"]

    problems = broken(edit)
    assert sorted(p.split(": ", 2)[1] for p in problems) == [
        f"menu.nodes.payment.prompt.{lang}" for lang in ("en", "ja", "zh")
    ]
    assert all("says key 4, which is no option of this menu nor a global key" in p for p in problems)


def test_numbers_that_are_no_keys_are_no_stray_keys():
    """Hours, days and ranges in a menu prompt are numbers, not keys the menu lacks."""

    def edit(d):
        prompt = d["menu"]["nodes"]["refund"]["prompt"]
        prompt["ja"] = "返金は5〜7営業日、受付は8時から18時、8:30開始です。" + prompt["ja"]
        prompt["zh"] = "退款需要5至7个工作日，24小时服务。" + prompt["zh"]
        prompt["en"] = "Refunds take 5-7 business days; we open at 8:30, 6 days a week. " + prompt["en"]

    data = yaml.safe_load(SHIPPED)
    edit(data)
    parse_config(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "hotline.yaml")  # no error
