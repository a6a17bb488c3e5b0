"""JavaScript/TypeScript step configs: read by Node at start-up, validated like Python ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog

from app.runtime import ApiStepConfig, EventStepConfig, StepConfigError, discover
from app.runtime._graph import graph_data
from tests.node_support import needs_node
from tests.support import run_cli, write_steps

GOOD_TS = """
    export const config = { name: 'Good', type: 'api', path: '/good', method: 'GET' };
    export const handler = async () => ({ status: 200, body: {} });
"""
HANDLER = "export const handler = async () => ({ status: 200, body: {} });\n"


def problems_of(tmp_path: Path, files: dict[str, str]) -> str:
    with pytest.raises(StepConfigError) as info:
        discover(write_steps(tmp_path, files))
    return str(info.value)


@needs_node
@pytest.mark.parametrize(
    ("source", "field", "reason"),
    [
        (
            "export const config = { name: 'A', type: 'api', path: 'a', method: 'GET' };\n"
            + HANDLER,
            "config.path",
            "must start with '/'",
        ),
        (
            "export const config = { name: 'A', type: 'rest', path: '/a' };\n" + HANDLER,
            "config.type",
            "unknown step type 'rest'",
        ),
        (
            "export const config = { type: 'api', path: '/a', method: 'GET' };\n" + HANDLER,
            "config.name",
            "missing",
        ),
        (
            "export const config = { name: 'A', type: 'event', subscribes: ['x'],\n"
            "  retry: { maxAttempts: 0 } };\n" + HANDLER,
            "config.retry.maxAttempts",  # named as the JS file spells it
            "greater than or equal to 1",
        ),
        (
            "export const config = { name: 'A', type: 'api', path: '/a', method: 'GET' };\n",
            "handler",
            "missing (export `const handler",
        ),
        (
            "export const config = { name: 'A', type: 'api', path: '/a', method: 'GET' };\n"
            "export const handler = 42;\n",
            "handler",
            "must be a function, got number",
        ),
        (
            "const config = { name: 'A', type: 'api', path: '/a', method: 'GET' };\n" + HANDLER,
            "config",
            "missing (a step file exports `config` and `handler`)",
        ),
        (
            "export const config = { name: 'A', type: 'api', path: '/a', method: 'GET',\n"
            "  middleware: [async (req, ctx, next) => next()] };\n" + HANDLER,
            "config.middleware",
            "not supported in JavaScript steps",
        ),
        (
            "const z = { _def: {}, safeParse() {} };\n"
            "export const config = { name: 'A', type: 'api', path: '/a', method: 'POST',\n"
            "  body: z };\n" + HANDLER,
            "config.body",
            "a zod schema (give a JSON Schema object instead)",
        ),
        (
            "export const config = { name: 'A', type: 'api', path: '/a', method: 'POST',\n"
            "  body: { type: 'object', properties: { x: { oneOf: [] } } } };\n" + HANDLER,
            "config.body.properties.x",
            "JSON Schema keyword 'oneOf' is not supported",
        ),
        (
            "export const config = { name: 'A', type: 'event', subscribes: ['x'],\n"
            "  input: { type: 'string' } };\n" + HANDLER,
            "config.input",
            'must be a JSON Schema with "type": "object"',
        ),
        (
            "interface Broken {\nexport const config = {};\n",
            "cannot be loaded",
            "SyntaxError",
        ),
        (
            "const key: string | undefined = undefined;\n"
            "if (!key) throw new Error('PAYMENT_KEY is not set');\n"
            "export const config = {};\n",
            "cannot be loaded",
            "Error: PAYMENT_KEY is not set (at ",
        ),
    ],
)
def test_a_bad_js_config_stops_start_up_with_the_file_and_the_reason(
    tmp_path: Path, source: str, field: str, reason: str
) -> None:
    message = problems_of(tmp_path, {"good.step.ts": GOOD_TS, "bad.step.ts": source})
    assert "bad.step.ts" in message
    assert f"bad.step.ts: {field}" in message
    assert reason in message
    assert "good.step.ts" not in message
    assert "1 problem(s)" in message


@needs_node
def test_js_and_python_steps_share_one_namespace_of_names_and_routes(tmp_path: Path) -> None:
    message = problems_of(
        tmp_path,
        {
            "a_step.py": "config = {'name': 'Same', 'type': 'api', 'path': '/u/{id}', 'method': 'GET'}\n"
            "async def handler(req, ctx):\n    return None\n",
            "b.step.js": "export const config = { name: 'Same', type: 'api', path: '/v', method: 'GET' };\n"
            + HANDLER,
            "c.step.js": "export const config = { name: 'C', type: 'api', path: '/u/{user_id}', method: 'get' };\n"
            + HANDLER,
        },
    )
    assert "b.step.js: config.name: duplicate step name 'Same'" in message
    assert "c.step.js: config.path: duplicate route GET /u/{user_id}" in message


@needs_node
def test_js_configs_are_the_same_models_as_python_ones(tmp_path: Path) -> None:
    folder = write_steps(
        tmp_path,
        {
            "send.step.ts": """
                import { TOPIC } from './topics';

                export const config = {
                  name: 'Send', type: 'api', path: '/send', method: 'post', auth: 'public',
                  body: { type: 'object', properties: { text: { type: 'string' } } },
                  emits: [TOPIC], flows: ['chat'],
                };
                export const handler = async () => ({ status: 202, body: {} });
            """,
            "topics.ts": "export const TOPIC: string = 'chat.sent';\n",
            "note.step.js": """
                module.exports = {
                  config: { name: 'Note', type: 'event', subscribes: ['chat.sent'],
                            retry: { maxAttempts: 5, backoff: 'fixed', delay: 2, timeout: 9 } },
                  handler: async () => {},
                };
            """,
            "edge.step.js": """
                export const config = { name: 'Edge', type: 'noop', subscribes: ['chat.sent'],
                                        virtualEmits: ['chat.archived'] };
            """,
            "ignored/node_modules/dep/x.step.js": "throw new Error('never loaded');\n",
        },
    )
    registry = discover(folder)
    send, note, edge = (registry.get(n) for n in ("Send", "Note", "Edge"))
    graph = {s["name"]: s for s in graph_data(registry)["steps"]}
    assert isinstance(send.config, ApiStepConfig) and send.config.method == "POST"
    assert send.config.emit_topics == {"chat.sent"}
    assert send.config.body is not None
    assert send.config.body.model_json_schema()["properties"]["text"]["type"] == "string"
    assert isinstance(note.config, EventStepConfig)
    assert (note.config.retry.max_attempts, note.config.retry.timeout) == (5, 9)
    assert edge.handler is None and {e.topic for e in edge.config.virtual_emits} == {
        "chat.archived"
    }
    assert (graph["Send"]["language"], graph["Note"]["language"]) == ("typescript", "javascript")
    assert graph["Send"]["file"].endswith("send.step.ts")


def test_without_node_js_steps_are_left_out_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs everywhere: Node is hidden from the PATH."""
    folder = write_steps(
        tmp_path,
        {
            "py_step.py": "config = {'name': 'Py', 'type': 'api', 'path': '/py', 'method': 'GET'}\n"
            "async def handler(req, ctx):\n    return None\n",
            "js.step.js": GOOD_TS,
        },
    )
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with structlog.testing.capture_logs() as logs:
        registry = discover(folder)
    assert [s.name for s in registry.steps] == ["Py"]
    warning = next(r for r in logs if r["log_level"] == "warning")
    assert "Node.js not found" in warning["event"]
    assert any(f.endswith("js.step.js") for f in warning["files"])


@needs_node
def test_the_cli_refuses_to_start_with_the_js_file_and_the_reason(tmp_path: Path) -> None:
    steps = write_steps(
        tmp_path,
        {
            "bad.step.js": "export const config = { name: 'A', type: 'nope' };\n" + HANDLER,
        },
    )
    result = run_cli("graph", env={"STEPS_DIR": str(steps)})
    assert result.returncode == 1
    assert "bad.step.js: config.type: unknown step type 'nope'" in result.stderr
    assert "Traceback" not in result.stderr


@needs_node
def test_configs_are_read_by_node_once_per_version_of_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.runtime import _node

    reads: list[int] = []
    real = _node.read_configs

    def counting(node: str, files: list[Path]) -> Any:
        reads.append(len(files))
        return real(node, files)

    monkeypatch.setattr(_node, "read_configs", counting)
    folder = write_steps(
        tmp_path,
        {
            "a.step.ts": "import { PATH } from './paths';\n"
            "export const config = { name: 'A', type: 'api', path: PATH, method: 'GET' };\n"
            + HANDLER,
            "paths.ts": "export const PATH = '/a';\n",
        },
    )
    first = discover(folder).get("A").config
    again = discover(folder).get("A").config
    (folder / "paths.ts").write_text("export const PATH = '/a/changed';\n")
    changed = discover(folder).get("A").config
    assert reads == [1, 1]  # the second discovery asked nobody; the edit was seen
    assert (first.path, again.path, changed.path) == ("/a", "/a", "/a/changed")  # type: ignore[union-attr]
