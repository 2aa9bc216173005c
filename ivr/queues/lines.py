"""Which lines each agent may serve, from config: (queue, language, priority) for every queue
whose skills the agent has, in the languages both speak."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ivr.calllog import CallLog, make_event
from ivr.menus.checks import queue_skills
from ivr.menus.model import HotlineConfig, TransferNode
from ivr.queues.state import RoutingState


def agent_lines(config: HotlineConfig) -> dict[str, list[tuple[str, str, int]]]:
    lines: dict[str, list[tuple[str, str, int]]] = {}
    for agent in config.agents:
        own = []
        for name, queue in config.queues.items():
            if not queue_skills(name, config) & set(agent.skills):
                continue
            for lang in queue.languages or config.languages:
                if lang in agent.languages:
                    own.append((name, lang, queue.priority))
        lines[agent.id] = own
    return lines


def agents_for(config: HotlineConfig, queue: str, lang: str) -> list[str]:
    """Agents who can take a caller waiting in (queue, lang)."""
    return [
        agent for agent, lines in agent_lines(config).items() if any(q == queue and lg == lang for q, lg, _ in lines)
    ]


def served_lines(config: HotlineConfig) -> set[tuple[str, str]]:
    """Every (queue, language) line the config serves."""
    return {(name, lang) for name, queue in config.queues.items() for lang in queue.languages or config.languages}


@dataclass(frozen=True)
class NewHome:
    """Where the callers of a line the config no longer serves go: their transfer node's queue
    (`by_node`), else `fallback_queue`; in `lang_in[that queue]`."""

    by_node: dict[str, str]
    fallback_queue: str
    lang_in: dict[str, str]


def new_home(config: HotlineConfig, queue: str, lang: str) -> NewHome:
    """For a line dropped by a reload: a queue renamed or removed (its callers follow the transfer
    node that queued them, or go to the agent node's queue), or a language no longer served there
    (the same queue, in the default language if it serves it, else its first)."""
    if queue in config.queues:
        by_node, fallback = {}, queue
    else:
        by_node = {nid: node.queue for nid, node in config.menu.nodes.items() if isinstance(node, TransferNode)}
        agent_node = config.menu.nodes.get(config.input.agent_node)
        fallback = agent_node.queue if isinstance(agent_node, TransferNode) else next(iter(config.queues))
    lang_in = {}
    for name in {fallback, *by_node.values()}:
        served = list(config.queues[name].languages or config.languages)
        lang_in[name] = next(choice for choice in (lang, config.default_language, served[0]) if choice in served)
    return NewHome(by_node, fallback, lang_in)


def rehome_line(
    routing: RoutingState, calls: CallLog, config: HotlineConfig, queue: str, lang: str, now: datetime
) -> list[tuple[str, str, str]]:
    """Move a dropped line's callers to their new home (`new_home`), and note it on each live
    caller's ticket: its queue block then names the line they were served from, and the move.
    Returns what moved: (member, queue, language)."""
    home = new_home(config, queue, lang)
    moved = routing.rehome(queue, lang, home.by_node, home.fallback_queue, home.lang_in)
    notes = {
        member: [make_event("line_moved", now, from_queue=queue, from_lang=lang, queue=new_queue, lang=new_lang)]
        for member, new_queue, new_lang in moved
        if not member.startswith("cb:")  # a callback's seat: its record follows, its call is later
    }
    if notes:
        calls.append_many(notes)
    return moved
