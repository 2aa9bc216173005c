"""The menu tree as a graph: where each node leads, and the order nodes are reached in."""

from __future__ import annotations

from collections import deque

from ivr.menus.model import HotlineConfig, InfoNode, MenuNode, Node


def node_edges(node: Node) -> list[str]:
    """Nodes reachable in one step: options, a menu's agent transfer, an answer's `next`."""
    if isinstance(node, MenuNode):
        return [o.goto for o in node.options] + ([node.agent] if node.agent else [])
    if isinstance(node, InfoNode) and node.next:
        return [node.next]
    return []


def entry_points(config: HotlineConfig) -> list[str]:
    """Where calls enter the tree: the root, the agent key's default, the after-hours message."""
    return [n for n in (config.menu.root, config.input.agent_node, config.after_hours.message_node) if n]


def reachable_in_order(config: HotlineConfig) -> list[str]:
    """Existing nodes reachable from the entry points, breadth first (parents before children)."""
    nodes = config.menu.nodes
    order, seen = [], set()
    todo = deque(n for n in entry_points(config) if n in nodes)
    while todo:
        node_id = todo.popleft()
        if node_id in seen:
            continue
        seen.add(node_id)
        order.append(node_id)
        todo.extend(t for t in node_edges(nodes[node_id]) if t in nodes)
    return order
