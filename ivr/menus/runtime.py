"""The live config and what is derived from it, reloaded when ops publish a valid change.

A running call keeps working across a reload: its URLs carry only node ids, and a node that
disappeared is answered with a recovery to the main menu (see `ivr.menus.flow`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ivr.hours import Hours
from ivr.menus.graph import reachable_in_order
from ivr.menus.loader import ConfigError, load_config
from ivr.menus.model import HotlineConfig, InfoNode, Language, MenuNode, Node
from ivr.queues.lines import served_lines

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """A validated config plus lookups the flow needs on every request."""

    config: HotlineConfig
    hours: Hours
    parents: dict[str, str]  # node -> the menu that leads to it (first found from the root)
    branches: dict[str, str]  # node -> branch it belongs to (own or inherited from its parent)
    agents: dict[str, str]  # node -> transfer node its agent key reaches (own or inherited)
    version: str = field(default="")
    lines: frozenset[tuple[str, str]] = frozenset()  # the (queue, language) lines agents serve
    # Rendered TwiML by its inputs (see Flow._memo); a new config gets a new, empty cache.
    rendered: dict[tuple, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(cls, config: HotlineConfig, version: str = "") -> Plan:
        parents = _parents(config)
        branches: dict[str, str] = {}
        agents: dict[str, str] = {}
        for node_id in reachable_in_order(config):
            node, parent = config.menu.nodes[node_id], parents.get(node_id, "")
            if branch := node.branch or branches.get(parent):
                branches[node_id] = branch
            own_agent = node.agent if isinstance(node, MenuNode) else None
            agents[node_id] = own_agent or agents.get(parent) or config.input.agent_node
        return cls(config, Hours(config.hours), parents, branches, agents, version, frozenset(served_lines(config)))

    def node(self, node_id: str) -> Node | None:
        return self.config.menu.nodes.get(node_id)

    def language(self, lang_id: str | None) -> tuple[str, Language]:
        """The caller's language, falling back to the default for unknown ids."""
        if lang_id in self.config.languages:
            return lang_id, self.config.languages[lang_id]
        default = self.config.default_language
        return default, self.config.languages[default]


def _parents(config: HotlineConfig) -> dict[str, str]:
    parents: dict[str, str] = {}
    for node_id in reachable_in_order(config):
        node = config.menu.nodes[node_id]
        if isinstance(node, MenuNode):
            for target in (o.goto for o in node.options):
                if target != config.menu.root:
                    parents.setdefault(target, node_id)
            if node.agent and node.agent != config.menu.root:
                # This menu's agent key leads there: "back" from it (the closed line's offer says
                # "press star to go back") returns to this menu, not the main one.
                parents.setdefault(node.agent, node_id)
        elif isinstance(node, InfoNode) and node.next:
            # "next" is automatic, so "back" from the target means back to where the info was.
            parents.setdefault(node.next, parents.get(node_id, config.menu.root))
    return parents


class ConfigHolder:
    """Serves the current Plan; every `interval_s` it checks the file and reloads a valid change."""

    def __init__(self, path: str | Path, interval_s: float = 2.0):
        self.path = Path(path)
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._stamp = self._file_stamp()
        self._plan = Plan.build(load_config(self.path), version=self._version())
        self._checked = time.monotonic()
        # The last change refused while the previous config stays live (None once one is taken):
        # /healthz shows it, so ops see that their publish did not go live, and why.
        self.refused: dict | None = None

    def current(self) -> Plan:
        if self.interval_s and time.monotonic() - self._checked >= self.interval_s:
            self.reload_if_changed()
        return self._plan

    def reload_if_changed(self) -> bool:
        with self._lock:
            self._checked = time.monotonic()
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            try:
                self._plan = Plan.build(load_config(self.path), version=self._version())
            except ConfigError as exc:
                log.error("config change refused; the previous config stays live:\n%s", exc)
                self._refuse(exc.problems)
                return False
            except Exception as exc:  # a live call must never fail because of a bad publish
                log.exception("config change refused (unexpected error); the previous config stays live")
                self._refuse([f"{self.path}: unexpected error {type(exc).__name__}"])
                return False
            self.refused = None
            log.info("config reloaded from %s (version %s)", self.path, self._plan.version)
            return True

    def _refuse(self, problems: list[str]) -> None:
        try:
            version = self._version()
        except OSError:
            version = None  # the file is gone or unreadable: that is the problem
        self.refused = {"version": version, "problems": problems[:20], "count": len(problems)}

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def _version(self) -> str:
        import hashlib

        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
