"""The step graph as data, text and Mermaid: steps, topics, who emits and subscribes to what,
and the declared streams."""

from __future__ import annotations

import re
from typing import Any

from ._config import ApiStepConfig, CronStepConfig, EventStepConfig, NoopStepConfig
from ._steps import Registry, Step, _display
from ._stream_config import StreamDef


def _step_data(step: Step) -> dict[str, Any]:
    config = step.config
    data: dict[str, Any] = {
        "name": step.name,
        "type": step.type,
        "file": _display(step.file),
        "language": step.handler.language if step.handler is not None else None,
        "description": config.description,
        "flows": list(config.flows),
        "emits": sorted(config.emit_topics),
        "virtual_emits": sorted({e.topic for e in config.virtual_emits}),
        "subscribes": [],
    }
    if isinstance(config, ApiStepConfig):
        data.update(method=config.method, path=config.path, auth=config.auth)
        data["body"] = config.body.model_json_schema() if config.body else None
        data["query"] = config.query.model_json_schema() if config.query else None
    if isinstance(config, EventStepConfig | NoopStepConfig):
        data["subscribes"] = list(config.subscribes)
    if isinstance(config, EventStepConfig):
        data["input"] = config.input.model_json_schema() if config.input else None
        data["retry"] = config.retry.model_dump()
        data["concurrency"] = config.concurrency
    if isinstance(config, CronStepConfig):
        data.update(schedule=config.schedule, timezone=config.timezone)
    return data


def stream_data(stream: StreamDef) -> dict[str, Any]:
    config = stream.config
    authorize = config.authorize
    return {
        "name": stream.name,
        "file": _display(stream.file),
        "description": config.description,
        "flows": list(config.flows),
        "schema": config.item_schema.model_json_schema(),
        "schema_name": config.item_schema.__name__,
        "authorize": getattr(authorize, "__name__", "authorize") if authorize else None,
    }


def graph_data(registry: Registry, streams: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    steps = [_step_data(s) for s in registry.steps]
    edges = []
    for topic, ends in sorted(registry.topics().items()):
        for source in ends["emitted_by"]:
            for target in ends["subscribed_by"]:
                edges.append({"from": source, "to": target, "topic": topic})
    return {
        "steps": steps,
        "topics": registry.topics(),
        "edges": edges,
        "flows": sorted({f for s in registry.steps for f in s.config.flows}),
        "streams": streams if streams is not None else [stream_data(s) for s in registry.streams],
        "warnings": registry.warnings(),
    }


def graph_text(registry: Registry) -> str:
    lines = []
    for step in sorted(registry.steps, key=lambda s: (s.type, s.name)):
        config = step.config
        head = f"[{step.type}] {step.name}"
        if isinstance(config, ApiStepConfig):
            head += f"  {config.method} {config.path} (auth: {config.auth})"
        if isinstance(config, CronStepConfig):
            head += f"  '{config.schedule}' {config.timezone}"
        if config.flows:
            head += f"  flows: {', '.join(config.flows)}"
        lines.append(head)
        if isinstance(config, EventStepConfig | NoopStepConfig) and config.subscribes:
            lines.append(f"    <- {', '.join(config.subscribes)}")
        if config.emits:
            lines.append(f"    -> {', '.join(sorted(config.emit_topics))}")
        if config.virtual_emits:
            lines.append(f"    ~> {', '.join(sorted(e.topic for e in config.virtual_emits))}")
    for stream in sorted(registry.streams, key=lambda s: s.name):
        declared = stream.config
        head = f"[stream] {stream.name}  items: {declared.item_schema.__name__}"
        if declared.authorize is not None:
            head += f"  authorize: {getattr(declared.authorize, '__name__', 'authorize')}"
        if declared.flows:
            head += f"  flows: {', '.join(declared.flows)}"
        lines.append(head)
    for warning in registry.warnings():
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def _node_id(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def graph_mermaid(registry: Registry) -> str:
    shapes = {
        "api": ('(["', '"])'),
        "event": ('["', '"]'),
        "cron": ('{{"', '"}}'),
        "noop": ('>"', '"]'),
    }
    lines = ["flowchart LR"]
    for step in registry.steps:
        left, right = shapes[step.type]
        label = f"{step.name}<br/><small>{step.type}</small>"
        lines.append(f"  {_node_id(step.name)}{left}{label}{right}")
        lines.append(f"  class {_node_id(step.name)} {step.type}")
    for topic, ends in sorted(registry.topics().items()):
        for source in ends["emitted_by"]:
            targets = ends["subscribed_by"]
            if not targets:
                sink = "topic_" + _node_id(topic)
                lines.append(f'  {sink}(("{topic}"))')
                lines.append(f"  {_node_id(source)} -. {topic} .-> {sink}")
            for target in targets:
                lines.append(f"  {_node_id(source)} -- {topic} --> {_node_id(target)}")
    for stream in registry.streams:
        node = "stream_" + _node_id(stream.name)
        lines.append(f'  {node}[("{stream.name}<br/><small>stream</small>")]')
        lines.append(f"  class {node} stream")
    lines += [
        "  classDef stream fill:#fae8ff,stroke:#a21caf",
        "  classDef api fill:#dbeafe,stroke:#1d4ed8",
        "  classDef event fill:#dcfce7,stroke:#15803d",
        "  classDef cron fill:#fef3c7,stroke:#b45309",
        "  classDef noop fill:#f3f4f6,stroke:#6b7280,stroke-dasharray: 4 3",
    ]
    return "\n".join(lines)
