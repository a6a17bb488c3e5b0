"""JavaScript and TypeScript steps beside Python ones: one graph, one outbox, the same guarantees.

Real Node.js processes, real databases: nothing here is mocked.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from app.runtime import add_log_sink, remove_log_sink
from app.runtime._recorder import StepRun
from app.runtime._schema import deliveries
from app.runtime._unit import Unit
from tests.node_support import needs_node
from tests.runtime.conftest import step_app
from tests.support import eventually, runtime_of

pytestmark = needs_node

GREETING = {
    "greet.step.ts": """
        interface GreetBody { name: string; shout: boolean }
        interface Request { body: GreetBody }

        export const config = {
          name: 'Greet',
          type: 'api',
          path: '/greet',
          method: 'POST',
          auth: 'public',
          body: {
            type: 'object',
            properties: {
              name: { type: 'string', minLength: 1, maxLength: 50 },
              shout: { type: 'boolean', default: false },
            },
            required: ['name'],
          },
          responses: {
            202: {
              type: 'object',
              properties: { id: { type: 'string' }, traceId: { type: 'string' } },
              required: ['id'],
            },
          },
          emits: ['greeting.requested'],
          flows: ['greetings'],
        };

        export const handler = async (req: Request, { emit, state, traceId }: any) => {
          const id = `g-${req.body.name.toLowerCase()}`;
          await state.set('greetings', id, { name: req.body.name, status: 'requested' });
          await emit({ topic: 'greeting.requested', data: { id, name: req.body.name, shout: req.body.shout } });
          return { status: 202, body: { id, traceId, secret: 'dropped by the response schema' } };
        };
    """,
    "compose_step.py": """
        from pydantic import BaseModel

        class GreetingRequested(BaseModel):
            id: str
            name: str
            shout: bool

        config = {"name": "Compose", "type": "event", "subscribes": ["greeting.requested"],
                  "input": GreetingRequested, "emits": ["greeting.composed"],
                  "flows": ["greetings"]}

        async def handler(event, ctx):
            text = f"Hello, {event.data.name}!"
            text = text.upper() if event.data.shout else text
            await ctx.state.increment("greetings", "composed")
            await ctx.emit({"topic": "greeting.composed", "data": {"id": event.data.id, "text": text}})
    """,
    "deliver.step.js": """
        export const config = {
          name: 'Deliver',
          type: 'event',
          subscribes: ['greeting.composed'],
          input: {
            type: 'object',
            properties: { id: { type: 'string' }, text: { type: 'string' } },
            required: ['id', 'text'],
          },
          flows: ['greetings'],
        };

        export const handler = async (event, { state, logger, attempt }) => {
          logger.warn('delivered', { text: event.data.text, topic: event.topic });
          await state.merge('greetings', event.data.id, { status: 'delivered', text: event.data.text, attempt });
        };
    """,
}


async def state_of(client: httpx.AsyncClient, group: str) -> dict[str, Any]:
    runtime = runtime_of(client)
    return await Unit(runtime.engine, runtime.clock.now).get_group(group)


async def unfinished(client: httpx.AsyncClient) -> int:
    async with runtime_of(client).read_connection() as conn:
        query = (
            select(func.count())
            .select_from(deliveries)
            .where(deliveries.c.status.in_(("pending", "running")))
        )
        return int((await conn.execute(query)).scalar_one())


async def test_a_typescript_api_step_emits_to_a_python_event_step_and_back(
    tmp_path: Path, any_db_url: str
) -> None:
    records: list[dict[str, Any]] = []
    add_log_sink(records.append)
    try:
        async with step_app(tmp_path, any_db_url, GREETING) as client:
            runs: list[StepRun] = []
            runtime_of(client).recorder.add_listener(runs.append)
            reply = await client.post(
                "/greet", json={"name": "Ada", "shout": True}, headers={"X-Trace-Id": "trace-ada"}
            )
            done = await eventually(lambda: _status(client, "g-ada", "delivered"))
            everything = await state_of(client, "greetings")
            await eventually(lambda: _async(len(runs) >= 3))
            languages = {s.name: s.handler.language for s in runtime_of(client).registry.steps}  # type: ignore[union-attr]
    finally:
        remove_log_sink(records.append)
    assert reply.status_code == 202
    # the response schema shapes the body: the undeclared `secret` does not leak
    assert reply.json() == {"id": "g-ada", "traceId": "trace-ada"}
    assert done == {"name": "Ada", "status": "delivered", "text": "HELLO, ADA!", "attempt": 1}
    assert everything["composed"] == 1
    assert [(r.step, r.kind, r.outcome, r.trace_id) for r in runs] == [
        ("Greet", "api", "ok", "trace-ada"),
        ("Compose", "event", "ok", "trace-ada"),
        ("Deliver", "event", "ok", "trace-ada"),
    ]
    delivered = [r for r in records if r.get("event") == "delivered"]
    assert delivered and delivered[0]["trace_id"] == "trace-ada"
    assert delivered[0]["step"] == "Deliver" and delivered[0]["text"] == "HELLO, ADA!"
    assert languages == {"Greet": "typescript", "Compose": "python", "Deliver": "javascript"}


async def test_a_js_steps_json_schema_is_enforced_at_the_edge_and_at_emit_time(
    tmp_path: Path, db_url: str
) -> None:
    files = {
        **GREETING,
        "broken.step.js": """
            export const config = { name: 'Broken', type: 'api', path: '/broken', method: 'POST',
                                    auth: 'public', emits: ['greeting.requested'] };
            export const handler = async (req, { emit, state }) => {
              await state.set('greetings', 'broken', true);
              await emit({ topic: 'greeting.requested', data: { id: 'x', name: 42 } });
              return { status: 200, body: {} };
            };
        """,
    }
    async with step_app(tmp_path, db_url, files) as client:
        empty = await client.post("/greet", json={"name": ""})
        missing = await client.post("/greet", json={"shout": True})
        wrong_type = await client.post("/broken", json={})
        left = await state_of(client, "greetings")
        openapi = (await client.get("/openapi.json")).json()
    assert empty.status_code == 400 and empty.json()["code"] == "validation_failed"
    assert [d["field"] for d in empty.json()["details"]] == ["name"]
    assert [d["field"] for d in missing.json()["details"]] == ["name"]
    # data that does not fit the Python subscriber's input model fails the JS emitter
    assert wrong_type.status_code == 500
    assert left == {}
    body_schema = openapi["paths"]["/greet"]["post"]["requestBody"]["content"]["application/json"]
    assert "$ref" in body_schema["schema"]


async def test_a_js_handler_that_throws_is_retried_then_dead_lettered(
    tmp_path: Path, any_db_url: str
) -> None:
    files = {
        "start_step.py": """
            config = {"name": "Start", "type": "api", "path": "/start", "method": "POST",
                      "auth": "public", "emits": ["job.doomed"]}
            async def handler(req, ctx):
                await ctx.emit({"topic": "job.doomed", "data": {"n": 1}})
                return {"status": 202, "body": {}}
        """,
        "doomed.step.js": """
            export const config = {
              name: 'Doomed', type: 'event', subscribes: ['job.doomed'], emits: ['job.after'],
              retry: { maxAttempts: 3, backoff: 'fixed', delay: 0, jitter: false },
            };

            function check(attempt) {
              throw new Error(`boom on attempt ${attempt}`);
            }

            export const handler = async (event, { state, emit, attempt }) => {
              await state.set('doomed', `attempt-${attempt}`, true);
              await state.increment('doomed', 'count');
              await emit({ topic: 'job.after', data: { attempt } });
              check(attempt);
            };
        """,
        "after_step.py": """
            CALLS = []
            config = {"name": "After", "type": "event", "subscribes": ["job.after"]}
            async def handler(event, ctx):
                CALLS.append(event.data)
        """,
    }
    async with step_app(tmp_path, any_db_url, files) as client:
        runs: list[StepRun] = []
        runtime_of(client).recorder.add_listener(runs.append)
        await client.post("/start", headers={"X-Trace-Id": "trace-doomed"})
        dead = await eventually(runtime_of(client).dead_letters)
        left = await state_of(client, "doomed")
        after = await state_of(client, "after")
        pending = await unfinished(client)
    letter = dead[0]
    assert letter["step"] == "Doomed" and letter["attempts"] == 3
    assert letter["trace_id"] == "trace-doomed" and letter["data"] == {"n": 1}
    assert [e["attempt"] for e in letter["errors"]] == [1, 2, 3]
    error = letter["errors"][2]["error"]
    assert "JavaScriptError: Error: boom on attempt 3" in error
    assert "doomed.step.js:8:" in error  # where it was thrown, in the step's own file
    # a handler that throws leaves nothing: no state, no emit
    assert left == {} and after == {} and pending == 0
    assert [(r.step, r.outcome) for r in runs if r.step == "Doomed"] == [
        ("Doomed", "error"),
        ("Doomed", "error"),
        ("Doomed", "dead"),
    ]


async def test_killing_the_node_process_mid_handler_loses_nothing(
    tmp_path: Path, any_db_url: str
) -> None:
    marker = tmp_path / "hanging"
    files = {
        "tally.step.js": """
            import { writeFileSync } from 'node:fs';

            export const config = {
              name: 'Tally', type: 'event', subscribes: ['tally'],
              retry: { maxAttempts: 3, backoff: 'fixed', delay: 0.05 },
            };

            export const handler = async (event, { state, attempt }) => {
              await state.increment('tally', 'count');
              await state.set('tally-seen', event.id, { attempt, pid: process.pid });
              if (event.data.marker && attempt === 1) {
                writeFileSync(event.data.marker, String(process.pid)); // an outside effect
                await new Promise(() => {}); // hangs until the process is killed
              }
            };
        """,
    }
    async with step_app(tmp_path, any_db_url, files) as client:
        runtime = runtime_of(client)
        assert runtime.node is not None
        emits = [{"topic": "tally", "data": {"i": i}} for i in range(20)]
        emits[7]["data"]["marker"] = str(marker)
        ids = await runtime.emit_many(emits)
        await eventually(lambda: _async(marker.exists() and marker.read_text()))
        victim = int(marker.read_text())
        assert runtime.node.pids == [victim]
        os.kill(victim, signal.SIGKILL)
        await eventually(lambda: _equals(state_of(client, "tally"), {"count": 20}))
        await eventually(lambda: _equals(unfinished(client), 0))
        count = await state_of(client, "tally")
        seen = await state_of(client, "tally-seen")
        dead = await runtime.dead_letters()
        new_pids = await eventually(lambda: _async(runtime.node.pids))  # type: ignore[union-attr]
    assert count == {"count": 20}  # every delivery counted exactly once
    assert set(seen) == set(ids) and dead == []
    assert seen[ids[7]]["attempt"] == 2 and seen[ids[7]]["pid"] != victim
    assert new_pids and victim not in new_pids  # the pool restarted its process


async def test_a_timeout_cancels_the_node_call_and_the_delivery_is_retried(
    tmp_path: Path, any_db_url: str
) -> None:
    marker = tmp_path / "aborted"
    files = {
        "slow.step.js": """
            import { writeFileSync } from 'node:fs';

            export const config = {
              name: 'Slow', type: 'event', subscribes: ['slow'],
              retry: { maxAttempts: 2, backoff: 'fixed', delay: 0, timeout: 0.3 },
            };

            export const handler = async (event, { state, attempt, signal }) => {
              await state.set('slow', `attempt-${attempt}`, process.pid);
              if (attempt === 1) {
                await new Promise((resolve) => signal.addEventListener('abort', resolve));
                writeFileSync(event.data.marker, String(process.pid));
                await state.set('slow', 'after-abort', true); // refused: the call is over
              }
            };
        """,
    }
    async with step_app(tmp_path, any_db_url, files) as client:
        runtime = runtime_of(client)
        runs: list[StepRun] = []
        runtime.recorder.add_listener(runs.append)
        await runtime.node.start()  # type: ignore[union-attr]  # booted: 0.3 s is for the handler
        await runtime.emit("slow", {"marker": str(marker)})
        final = await eventually(lambda: state_of(client, "slow"))
        await eventually(lambda: _async(marker.exists() and marker.read_text()))
        restarts = runtime.node.restarts  # type: ignore[union-attr]
    # attempt 1 was cancelled inside Node (its signal fired) and left nothing; attempt 2 ran
    # in the same process: told to stop, not killed
    assert final == {"attempt-2": int(marker.read_text())}
    assert restarts == 0
    assert [r.outcome for r in runs] == ["timeout", "ok"]


async def test_a_handler_that_never_yields_is_killed_and_its_process_restarted(
    tmp_path: Path, db_url: str
) -> None:
    marker = tmp_path / "spinning"
    files = {
        "spin.step.js": """
            import { writeFileSync } from 'node:fs';

            export const config = {
              name: 'Spin', type: 'event', subscribes: ['spin'],
              retry: { maxAttempts: 2, backoff: 'fixed', delay: 0, timeout: 2 },
            };

            export const handler = async (event, { state, attempt }) => {
              if (attempt === 1) {
                writeFileSync(event.data.marker, String(process.pid));
                for (;;) {} // the event loop is stuck: the cancel can never be read
              }
              await state.set('spin', 'done', { attempt, pid: process.pid });
            };
        """,
    }
    async with step_app(tmp_path, db_url, files, node_cancel_grace_seconds=0.3) as client:
        runtime = runtime_of(client)
        await runtime.node.start()  # type: ignore[union-attr]
        await runtime.emit("spin", {"marker": str(marker)})
        done = await eventually(lambda: _get(client, "spin", "done"))
        restarts = runtime.node.restarts  # type: ignore[union-attr]
    assert done["attempt"] == 2
    assert done["pid"] != int(marker.read_text())
    assert restarts == 1


async def test_one_node_process_runs_many_calls_at_once(tmp_path: Path, db_url: str) -> None:
    files = {
        "gather.step.js": """
            let running = 0;
            let peak = 0;

            export const config = { name: 'Gather', type: 'api', path: '/gather', method: 'GET',
                                    auth: 'public' };

            // Each call waits until `n` calls are running at once (or 3 s have passed).
            export const handler = async (req) => {
              running += 1;
              peak = Math.max(peak, running);
              const until = Date.now() + 3000;
              while (running < Number(req.query.n) && Date.now() < until) {
                await new Promise((resolve) => setTimeout(resolve, 5));
              }
              const seen = peak;
              await new Promise((resolve) => setImmediate(resolve));
              running -= 1;
              return { status: 200, body: { peak: seen, pid: process.pid } };
            };
        """,
    }
    async with step_app(tmp_path, db_url, files, node_processes=1) as client:
        replies = await asyncio.gather(*(client.get("/gather?n=25") for _ in range(25)))
    assert {r.json()["peak"] for r in replies} == {25}
    assert len({r.json()["pid"] for r in replies}) == 1


CTX_STEPS = {
    "ops.step.ts": """
        export const config = { name: 'Ops', type: 'api', path: '/ops', method: 'POST',
                                auth: 'public', emits: ['ops.done'] };

        export const handler = async (req: any, { state, emit, t }: any) => {
          await state.set('ops', 'a', { n: 1, tags: ['x'] });
          await state.set('ops', 'gone', true);
          await state.delete('ops', 'gone');
          const own = await state.get('ops', 'a');
          const counter = await state.increment('ops', 'c', 5);
          const merged = await state.merge('ops', 'a', { tags: null, m: { deep: 1 } });
          const swapped = await state.compareAndSet('ops', 'c', 5, 50);
          const refused = await state.compareAndSet('ops', 'c', 5, 500);
          const updated = await state.update('ops', 'list', (cur: number[] | null) => [...(cur ?? []), 1]);
          await state.set('scratch', 'x', 1);
          await state.clear('scratch');
          const scratch = await state.getGroup('scratch');
          emit({ topic: 'ops.done', data: { fireAndForget: true } }); // not awaited: still sent
          return { status: 200, body: { own, counter, merged, swapped, refused, updated, scratch,
                                        text: await t('error.not_found') } };
        };
    """,
    "append.step.js": """
        export const config = { name: 'Append', type: 'api', path: '/append/{item}',
                                method: 'POST', auth: 'public' };
        export const handler = async (req, { state }) => {
          const list = await state.update('race', 'items', (cur) => {
            const items = cur ?? [];
            items.push(req.params.item); // changed in place: update still compares the original
            return items;
          });
          return { status: 200, body: { size: list.length } };
        };
    """,
    "careless.step.js": """
        export const config = { name: 'Careless', type: 'api', path: '/careless', method: 'POST',
                                auth: 'public', emits: ['ops.done'] };
        export const handler = async (req, { state, emit }) => {
          await state.set('careless', 'written', true);
          if (req.query.caught) {
            await emit({ topic: 'not.declared', data: {} }).catch(() => 'handled');
          } else {
            emit({ topic: 'not.declared', data: {} }); // neither awaited nor caught: fails the step
          }
          return { status: 200, body: { ok: true } };
        };
    """,
    "missing.step.js": """
        export const config = { name: 'Missing', type: 'api', path: '/things/{id}', method: 'GET',
                                auth: 'public' };
        export const handler = async (req) => {
          throw Object.assign(new Error('no such thing'), { status: 404, code: 'not_found' });
        };
    """,
    "done_step.py": """
        CALLS = []
        config = {"name": "OpsDone", "type": "event", "subscribes": ["ops.done"]}
        async def handler(event, ctx):
            CALLS.append(event.data)
    """,
}


async def test_the_js_ctx_offers_state_emit_and_translations(
    tmp_path: Path, any_db_url: str
) -> None:
    async with step_app(tmp_path, any_db_url, CTX_STEPS) as client:
        reply = await client.post("/ops")
        ops = await state_of(client, "ops")
        runtime = runtime_of(client)
        import sys

        calls = sys.modules[runtime.registry.get("OpsDone").module].CALLS
        await eventually(lambda: _async(calls))
        concurrent = await asyncio.gather(*(client.post(f"/append/{i}") for i in range(30)))
        race = await state_of(client, "race")
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "own": {"n": 1, "tags": ["x"]},
        "counter": 5,
        "merged": {"n": 1, "m": {"deep": 1}},
        "swapped": {"ok": True, "value": 50},
        "refused": {"ok": False, "value": 50},
        "updated": [1],
        "scratch": {},
        "text": "Resource not found.",
    }
    assert ops == {"a": {"n": 1, "m": {"deep": 1}}, "c": 50, "list": [1]}
    assert calls == [{"fireAndForget": True}]
    # compare-and-set under the row lock: 30 concurrent appends, none lost
    assert all(r.status_code == 200 for r in concurrent)
    assert sorted(race["items"], key=int) == [str(i) for i in range(30)]


async def test_a_ctx_call_that_fails_unobserved_fails_the_step(tmp_path: Path, db_url: str) -> None:
    async with step_app(tmp_path, db_url, CTX_STEPS) as client:
        careless = await client.post("/careless")
        left = await state_of(client, "careless")
        careful = await client.post("/careless?caught=1")
        kept = await state_of(client, "careless")
    assert careless.status_code == 500 and left == {}
    assert careful.status_code == 200 and kept == {"written": True}


async def test_a_js_error_with_a_status_and_code_is_the_error_envelope(
    tmp_path: Path, db_url: str
) -> None:
    async with step_app(tmp_path, db_url, CTX_STEPS) as client:
        reply = await client.get("/things/42", headers={"X-Trace-Id": "trace-404"})
    assert reply.status_code == 404
    assert reply.json() == {
        "error": "Resource not found.",
        "code": "not_found",
        "details": [],
        "trace_id": "trace-404",
    }


async def test_console_output_and_streams_go_through_the_ctx(tmp_path: Path, db_url: str) -> None:
    files = {
        "talk.step.js": """
            export const config = { name: 'Talk', type: 'api', path: '/talk', method: 'POST',
                                    auth: 'public' };
            export const handler = async (req, { streams }) => {
              console.warn('from console', { room: 'r1' });
              await streams.chat.set('r1', 'm1', { text: 'hi' });
              const item = await streams.chat.get('r1', 'm1');
              let missing = null;
              try { await streams.nope.get('a', 'b'); } catch (err) { missing = err.message; }
              return { status: 200, body: { item, missing } };
            };
        """,
    }

    class MemoryStream:
        """The smallest stream: what the streams feature plugs into `runtime.streams`."""

        def __init__(self) -> None:
            self.items: dict[tuple[str, str], Any] = {}

        def bind(self, unit: Any, ctx: Any) -> MemoryStream:
            return self

        async def set(self, group_id: str, id: str, data: Any) -> Any:
            self.items[(group_id, id)] = data
            return data

        async def get(self, group_id: str, id: str) -> Any:
            return self.items.get((group_id, id))

    records: list[dict[str, Any]] = []
    add_log_sink(records.append)
    try:
        async with step_app(tmp_path, db_url, files) as client:
            chat = MemoryStream()
            runtime_of(client).streams["chat"] = chat
            reply = await client.post("/talk", headers={"X-Trace-Id": "trace-talk"})
    finally:
        remove_log_sink(records.append)
    assert reply.status_code == 200, reply.text
    assert reply.json()["item"] == {"text": "hi"}
    assert "no stream named 'nope'" in reply.json()["missing"]
    assert chat.items == {("r1", "m1"): {"text": "hi"}}
    said = [r for r in records if "from console" in str(r.get("event"))]
    assert said and said[0]["trace_id"] == "trace-talk" and said[0]["step"] == "Talk"


async def test_step_tester_runs_a_typescript_step(tmp_path: Path) -> None:
    from app.runtime.testing import StepTester
    from tests.support import write_steps

    folder = write_steps(tmp_path, GREETING)
    async with StepTester("Greet", steps_dir=folder) as tester:
        result = await tester.call_api(body={"name": "Bo"})
        invalid = await tester.call_api(body={"name": ""})
        stored = await tester.state("greetings", "g-bo")
        emitted = tester.emitted
        pool = tester.runtime.node
    assert result.status == 202 and result.body["id"] == "g-bo"
    assert invalid.status == 400
    assert stored == {"name": "Bo", "status": "requested"}
    assert emitted[0]["topic"] == "greeting.requested"
    assert emitted[0]["data"] == {"id": "g-bo", "name": "Bo", "shout": False}
    assert pool is not None and pool.pids == []  # stopped with the tester


# -- helpers ----------------------------------------------------------------------------------


async def _async(value: Any) -> Any:
    return value


async def _equals(awaitable: Any, expected: Any) -> bool:
    return bool(await awaitable == expected)


async def _get(client: httpx.AsyncClient, group: str, key: str) -> Any:
    runtime = runtime_of(client)
    return await Unit(runtime.engine, runtime.clock.now).get(group, key)


async def _status(client: httpx.AsyncClient, key: str, status: str) -> Any:
    value = await _get(client, "greetings", key)
    return value if isinstance(value, dict) and value.get("status") == status else None
