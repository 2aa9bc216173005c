"""Whole-config checks pydantic cannot do field by field: references, keys, reachability, exits,
and that every text a caller may hear exists in every configured language."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import get_args

import phonenumbers

from ivr.menus.graph import node_edges, reachable_in_order
from ivr.menus.model import (
    Branch,
    HotlineConfig,
    InfoNode,
    MenuNode,
    RecordNode,
    TransferNode,
)

Finding = tuple[tuple[str | int, ...], str]


def check_config(config: HotlineConfig) -> list[Finding]:
    return [
        *_check_languages(config),
        *_check_translations(config),
        *_check_references(config),
        *_check_keys(config),
        *_check_keywords(config),
        *_check_prompts_name_keys(config),
        *_check_reachability(config),
        *_check_exits(config),
        *_check_queues(config),
        *_check_agents(config),
    ]


def _check_languages(config: HotlineConfig) -> Iterator[Finding]:
    if config.default_language not in config.languages:
        yield ("default_language",), f"{config.default_language!r} is not one of the languages"
    owner: dict[str, str] = {}
    for lang_id, lang in config.languages.items():
        if lang.key in owner:
            yield ("languages", lang_id, "key"), f"key {lang.key!r} is also {owner[lang.key]}'s"
        owner[lang.key] = lang_id
        for other in sorted(set(lang.language_names) - set(config.languages)):
            yield ("languages", lang_id, "language_names", other), f"unknown language {other!r}"


def _texts(config: HotlineConfig) -> Iterator[tuple[tuple[str | int, ...], dict]]:
    """Every language-keyed text in the config, with its place."""
    if isinstance(config.name, dict):
        yield ("name",), config.name
    for name in type(config.prompts).model_fields:
        yield ("prompts", name), getattr(config.prompts, name)
    for node_id, node in config.menu.nodes.items():
        base = ("menu", "nodes", node_id)
        for field in ("prompt", "message", "confirmation"):
            if hasattr(node, field):
                yield (*base, field), getattr(node, field)
        if isinstance(node, MenuNode):
            for i, option in enumerate(node.options):
                yield (*base, "options", i, "label"), option.label


def _check_translations(config: HotlineConfig) -> Iterator[Finding]:
    wanted = set(config.languages)
    for loc, texts in _texts(config):
        missing = sorted(wanted - set(texts))
        unknown = sorted(set(texts) - wanted)
        if missing:
            yield loc, f"missing translation for {', '.join(missing)}"
        if unknown:
            yield loc, f"text for unknown language {', '.join(unknown)}"
    for lang_id, lang in config.languages.items():
        # A branch is named to callers (the callback intro) and agents (the whisper).
        missing = [b for b in get_args(Branch) if not lang.branch_names.get(b)]
        if missing:
            yield ("languages", lang_id, "branch_names"), f"missing names for {', '.join(missing)}"
    for node_id, node in config.menu.nodes.items():
        if isinstance(node, MenuNode):
            for i, option in enumerate(node.options):
                for lang in sorted(set(option.keywords) - wanted):
                    loc = ("menu", "nodes", node_id, "options", i, "keywords", lang)
                    yield loc, f"keywords for unknown language {lang}"


def _check_references(config: HotlineConfig) -> Iterator[Finding]:
    nodes = config.menu.nodes

    def ref(loc, target, kind=None):
        node = nodes.get(target)
        if node is None:
            return [(loc, f"unknown node {target!r}")]
        if kind and not isinstance(node, kind):
            return [(loc, f"{target!r} must be a {kind.__name__.removesuffix('Node').lower()} node")]
        return []

    yield from ref(("menu", "root"), config.menu.root, MenuNode)
    yield from ref(("input", "agent_node"), config.input.agent_node, TransferNode)
    if config.after_hours.message_node:
        yield from ref(("after_hours", "message_node"), config.after_hours.message_node, RecordNode)
    for node_id, node in nodes.items():
        base = ("menu", "nodes", node_id)
        if isinstance(node, MenuNode):
            for i, option in enumerate(node.options):
                yield from ref((*base, "options", i, "goto"), option.goto)
            if node.agent:
                yield from ref((*base, "agent"), node.agent, TransferNode)
        elif isinstance(node, InfoNode) and node.next:
            yield from ref((*base, "next"), node.next)
        elif isinstance(node, TransferNode) and node.queue not in config.queues:
            yield (*base, "queue"), f"unknown queue {node.queue!r}"


def _check_keys(config: HotlineConfig) -> Iterator[Finding]:
    keys = config.input.keys
    reserved = {keys.repeat: "the repeat key", keys.back: "the back key"}
    if config.after_hours.message_key in {keys.agent, *reserved}:
        loc = ("after_hours", "message_key")
        yield loc, f"key {config.after_hours.message_key!r} is already a global key (agent, repeat or back)"
    callback_key = config.callbacks.key
    if config.callbacks.enabled and callback_key in {keys.agent, *reserved}:
        yield ("callbacks", "key"), f"key {callback_key!r} is already a global key (agent, repeat or back)"
    elif config.callbacks.enabled and callback_key == config.after_hours.message_key:
        yield ("callbacks", "key"), f"key {callback_key!r} is also after_hours.message_key; offers need both"
    if config.callbacks.enabled and config.callbacks.dial_mode == "agent_first" and not config.callbacks.agent_gate:
        yield ("callbacks", "agent_gate"), "agent_first dialling calls the reserved agent: it needs agent_gate: true"
    if config.callbacks.enabled:
        if config.callbacks.country not in phonenumbers.SUPPORTED_REGIONS:
            yield ("callbacks", "country"), f"phonenumbers knows no region {config.callbacks.country!r}"
    for node_id, node in config.menu.nodes.items():
        if not isinstance(node, MenuNode):
            continue
        first: dict[str, int] = {}
        for i, option in enumerate(node.options):
            loc = ("menu", "nodes", node_id, "options", i, "key")
            if option.key in first:
                yield loc, f"duplicate key {option.key!r} (also options[{first[option.key]}])"
            first.setdefault(option.key, i)
            if option.key in reserved:
                yield loc, f"key {option.key!r} is {reserved[option.key]} in every menu"
            if option.key == keys.agent and option.goto != config.input.agent_node:
                yield (
                    loc,
                    (
                        f"key {option.key!r} is the agent key in every menu; here it must go to "
                        f"{config.input.agent_node!r}"
                    ),
                )


def _check_keywords(config: HotlineConfig) -> Iterator[Finding]:
    """One spoken word selects one option: a word two options share would always pick the first."""
    for node_id, node in config.menu.nodes.items():
        if not isinstance(node, MenuNode):
            continue
        for lang_id in config.languages:
            owner: dict[str, int] = {}
            for i, option in enumerate(node.options):
                label = option.label.get(lang_id, "").casefold().strip()
                words = {label: "label"} | {w.casefold().strip(): "keywords" for w in option.keywords.get(lang_id, [])}
                for word, field in words.items():
                    if not word:
                        continue
                    if word in owner and owner[word] != i:
                        loc = ("menu", "nodes", node_id, "options", i, field, lang_id)
                        yield loc, f"{word!r} also selects options[{owner[word]}]: one word, one option"
                    owner.setdefault(word, i)


_FULL_WIDTH = str.maketrans("０１２３４５６７８９", "0123456789")
# A digit said as a key: "press 4", "4を(押して)", "(请)按4". Only these count for the stray-key
# rule: "5〜7営業日", "8:30", "24小时" are numbers, not keys (a language written otherwise is not
# checked for strays; the forward rule, that every key is said, still holds for it).
_KEY_MENTION = re.compile(r"(?i:press)\s*([0-9])(?![0-9])|(?<![0-9])([0-9])\s*を|按\s*([0-9])(?![0-9])")


def _check_prompts_name_keys(config: HotlineConfig) -> Iterator[Finding]:
    """A menu's prompt must say each of its digit keys in every language: an option added with
    the English prompt alone would be a key Japanese and Mandarin callers are never told of."""
    keys = config.input.keys
    global_keys = {keys.agent, keys.repeat, keys.back}
    for node_id, node in config.menu.nodes.items():
        if not isinstance(node, MenuNode):
            continue
        own = {option.key for option in node.options}
        for lang_id, text in node.prompt.items():
            said = text.translate(_FULL_WIDTH)
            loc = ("menu", "nodes", node_id, "prompt", lang_id)
            for i, option in enumerate(node.options):
                if option.key.isdigit() and option.key not in said:
                    yield loc, f"never says key {option.key} (options[{i}], to {option.goto!r}): write it as a digit"
            # The other way round: an option removed with its words left in the prompt sends
            # callers to "that is not an option".
            mentioned = {digit for groups in _KEY_MENTION.findall(said) for digit in groups if digit}
            for stray in sorted(mentioned - own - global_keys):
                yield loc, f"says key {stray}, which is no option of this menu nor a global key (an option removed?)"


def _edges(config: HotlineConfig) -> dict[str, list[str]]:
    return {node_id: node_edges(node) for node_id, node in config.menu.nodes.items()}


def _check_reachability(config: HotlineConfig) -> Iterator[Finding]:
    if config.menu.root not in config.menu.nodes:
        return  # the unknown root is reported; every node "unreachable" would bury it
    seen = set(reachable_in_order(config))
    for node_id in config.menu.nodes:
        if node_id not in seen:
            yield ("menu", "nodes", node_id), "unreachable: no menu option or 'next' leads here"


def _check_exits(config: HotlineConfig) -> Iterator[Finding]:
    """Every node must lead somewhere a call can end or be handed on, and `next` chains (which run
    without any input) must not loop."""
    nodes = config.menu.nodes
    edges = _edges(config)
    for node_id, node in nodes.items():
        chain, current = [node_id], node
        while isinstance(current, InfoNode) and current.next in nodes:
            if current.next in chain:
                loop = " -> ".join([*chain[chain.index(current.next) :], current.next])
                yield ("menu", "nodes", node_id, "next"), f"'next' loops forever: {loop}"
                break
            chain.append(current.next)
            current = nodes[current.next]
    exits = {n for n, node in nodes.items() if not isinstance(node, MenuNode) and not edges[n]}
    exits |= {n for n, node in nodes.items() if isinstance(node, InfoNode) and not node.next}
    # A reference to an unknown node is reported as such; it must not also read as a cycle.
    exits |= {n for n, targets in edges.items() if any(t not in nodes for t in targets)}
    changed = True
    while changed:
        changed = False
        for node_id, targets in edges.items():
            if node_id not in exits and any(t in exits for t in targets):
                exits.add(node_id)
                changed = True
    for node_id in nodes:
        if node_id not in exits:
            yield ("menu", "nodes", node_id), "cycle without exit: no path from here ends the call"


def queue_skills(name: str, config: HotlineConfig) -> set[str]:
    return set(config.queues[name].skills or [name])


def _check_queues(config: HotlineConfig) -> Iterator[Finding]:
    known = set(config.languages)
    for name, queue in config.queues.items():
        base = ("queues", name)
        for lang in sorted(set(queue.languages or []) - known):
            yield (*base, "languages"), f"unknown language {lang!r}"
        target = queue.overflow.queue
        if target is not None and target not in config.queues:
            yield (*base, "overflow", "queue"), f"unknown queue {target!r}"
        seen, current = [name], target
        while current in config.queues:
            if current in seen:
                yield (*base, "overflow", "queue"), f"overflow loops: {' -> '.join([*seen, current])}"
                break
            seen.append(current)
            current = config.queues[current].overflow.queue


def _check_agents(config: HotlineConfig) -> Iterator[Finding]:
    known = set(config.languages)
    first: dict[str, int] = {}
    for i, agent in enumerate(config.agents):
        if agent.id in first:
            yield ("agents", i, "id"), f"duplicate agent id {agent.id!r} (also agents[{first[agent.id]}])"
        first.setdefault(agent.id, i)
        for lang in sorted(set(agent.languages) - known):
            yield ("agents", i, "languages"), f"unknown language {lang!r}"
    if not config.agents:
        return  # agents may be managed elsewhere until the first are configured
    for name, queue in config.queues.items():
        skills = queue_skills(name, config)
        langs = set(queue.languages or config.languages)
        if not any(skills & set(a.skills) and langs & set(a.languages) for a in config.agents):
            yield ("queues", name), f"no agent has a skill in {sorted(skills)} and a language in {sorted(langs)}"
