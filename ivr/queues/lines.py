"""Which lines each agent may serve, from config: (queue, language, priority) for every queue
whose skills the agent has, in the languages both speak."""

from __future__ import annotations

from ivr.menus.checks import queue_skills
from ivr.menus.model import HotlineConfig


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
