"""The flow diagram's data: the step graph, grouped by real emit/subscribe wiring and by label."""

from __future__ import annotations

from typing import Any

from app.runtime import Registry
from app.runtime._graph import graph_data


def _components(names: list[str], links: list[tuple[str, str]]) -> list[list[str]]:
    """Connected components (union-find), each sorted, in order of their first member."""
    parent = {n: n for n in names}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for a, b in links:
        if a in parent and b in parent:
            parent[find(a)] = find(b)
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(find(n), []).append(n)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: names.index(g[0]))


def flows_data(registry: Registry, streams: list[dict[str, Any]]) -> dict[str, Any]:
    """`graph_data` plus `flows`: one entry per `flows` label, widened to every step wired to a
    labelled one through topics, and one per unlabelled group of wired steps.

    Two steps joined by a topic belong together even when only one of them carries the label
    (Motia drew them as disconnected, #1084).
    """
    graph = graph_data(registry, streams)
    names = [s["name"] for s in graph["steps"]]
    links: list[tuple[str, str]] = []
    for ends in graph["topics"].values():
        members = ends["emitted_by"] + ends["subscribed_by"]
        links += [(members[0], other) for other in members[1:]]
    components = _components(names, links)
    component_of = {n: i for i, group in enumerate(components) for n in group}
    by_name = {s["name"]: s for s in graph["steps"]}
    flows: list[dict[str, Any]] = []
    covered: set[int] = set()
    for label in graph["flows"]:
        labelled = [n for n in names if label in by_name[n]["flows"]]
        ids = sorted({component_of[n] for n in labelled})
        covered.update(ids)
        steps = sorted(n for i in ids for n in components[i])
        flows.append(
            {
                "name": label,
                "labelled": True,
                "steps": steps,
                "wired_in": sorted(set(steps) - set(labelled)),
            }
        )
    for i, group in enumerate(components):
        if i in covered:
            continue
        entry = by_name[group[0]]
        name = group[0] if len(group) == 1 else f"{entry['name']} +{len(group) - 1}"
        flows.append({"name": name, "labelled": False, "steps": group, "wired_in": []})
    for step in graph["steps"]:
        step["component"] = component_of[step["name"]]
    graph["flows"] = flows
    graph["components"] = components
    return graph
