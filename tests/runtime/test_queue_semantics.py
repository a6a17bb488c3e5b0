"""What Motia users expect of a queue, enforced: per-step concurrency, FIFO groups, delays,
overlap-free claims across workers, and the CLI's emit and dlq commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.runtime import EmitError, ManualClock, Runtime
from tests.runtime.conftest import step_app
from tests.runtime.test_workers import producer, start_worker, state, unfinished, workers
from tests.support import eventually, run_cli, runtime_of, write_steps

STEPS = {
    "limited_step.py": """
        import asyncio
        RUNNING = []
        PEAK = [0]
        config = {"name": "Limited", "type": "event", "subscribes": ["limited"], "concurrency": 2}
        async def handler(event, ctx):
            RUNNING.append(event.id)
            PEAK[0] = max(PEAK[0], len(RUNNING))
            await asyncio.sleep(0.05)
            RUNNING.remove(event.id)
            await ctx.state.increment("limited", "done")
    """,
    "ordered_step.py": """
        import asyncio
        SEEN = []
        config = {"name": "Ordered", "type": "event", "subscribes": ["ordered"],
                  "retry": {"max_attempts": 3, "delay": 0.5, "jitter": False}}
        async def handler(event, ctx):
            group, n = event.data["group"], event.data["n"]
            if n == 1 and group == "a" and ctx.attempt == 1:
                raise RuntimeError("the head of group a fails once: b goes on, a waits")
            await asyncio.sleep(0.01)
            SEEN.append((group, n))
    """,
    "later_step.py": """
        SEEN = []
        config = {"name": "Later", "type": "event", "subscribes": ["later"]}
        async def handler(event, ctx):
            SEEN.append(event.data)
            await ctx.state.set("later", "ran", True)
    """,
    "typed_step.py": """
        from pydantic import BaseModel
        class Order(BaseModel):
            id: str
            quantity: int
        config = {"name": "Typed", "type": "event", "subscribes": ["typed"], "input": Order,
                  "retry": {"max_attempts": 1}}
        async def handler(event, ctx):
            if event.data.quantity > 100:
                raise ValueError("too many")
            await ctx.state.set("typed", event.data.id, event.data.quantity)
    """,
}


def module(client: httpx.AsyncClient, step: str) -> Any:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    return sys.modules[runtime.registry.get(step).module]


async def test_per_step_concurrency_is_enforced(tmp_path: Path, any_db_url: str) -> None:
    async with step_app(tmp_path, any_db_url, STEPS, worker_concurrency=16) as client:
        runtime = runtime_of(client)
        await runtime.emit_many([{"topic": "limited", "data": {}} for _ in range(12)])
        await eventually(lambda: _eq(state(runtime, "limited", "done"), 12))
    assert module(client, "Limited").PEAK[0] == 2


async def test_events_of_one_message_group_run_one_at_a_time_in_order(
    tmp_path: Path, any_db_url: str
) -> None:
    async with step_app(tmp_path, any_db_url, STEPS, worker_concurrency=16) as client:
        runtime = runtime_of(client)
        await runtime.emit_many(
            [
                {"topic": "ordered", "data": {"group": g, "n": n}, "message_group_id": g}
                for n in range(1, 6)
                for g in ("a", "b")
            ]
        )
        seen = module(client, "Ordered").SEEN
        await eventually(lambda: _true(len(seen) == 10))
    assert [n for g, n in seen if g == "a"] == [1, 2, 3, 4, 5]
    assert [n for g, n in seen if g == "b"] == [1, 2, 3, 4, 5]
    # b was not held up by a's failing head
    assert seen.index(("b", 5)) < seen.index(("a", 1))


async def test_a_delayed_emit_waits_and_survives_a_restart(tmp_path: Path, any_db_url: str) -> None:
    clock = ManualClock(start=3_000_000.0)
    steps = write_steps(tmp_path, STEPS)
    async with producer(any_db_url, steps) as runtime:
        runtime.clock = clock
        await runtime.emit("later", {"x": 1}, delay=60)
    async with step_app(tmp_path, any_db_url, STEPS, clock=clock) as client:
        await _pause()
        assert module(client, "Later").SEEN == []
        clock.advance(61)
        await eventually(lambda: _true(module(client, "Later").SEEN == [{"x": 1}]))


async def test_event_data_reaches_the_handler_exactly_and_in_its_group(
    tmp_path: Path, any_db_url: str
) -> None:
    """Quotes, backslashes, NUL, line separators and astral characters survive the emit's
    statement (on Postgres the rows travel inside a JSON document) and the claim."""
    data = {"s": 'q"uo\\te \x00 \u2028 é 🎉', "n": [1, 2.5, None], "nested": {"k": "v"}}
    async with step_app(tmp_path, any_db_url, STEPS) as client:
        runtime = runtime_of(client)
        await runtime.emit("later", data, message_group_id="g" * 200)
        await eventually(lambda: _true([data] == module(client, "Later").SEEN))


async def test_an_emit_whose_message_group_cannot_be_stored_fails_and_queues_nothing(
    tmp_path: Path, any_db_url: str
) -> None:
    steps = write_steps(tmp_path, STEPS)
    async with producer(any_db_url, steps) as runtime:
        for group in ("a\x00b", "g" * 201, ""):
            with pytest.raises(EmitError, match="message_group_id must be 1 to 200 characters"):
                await runtime.emit("later", {"x": 1}, message_group_id=group)
        assert await unfinished(runtime) == 0
        await runtime.emit("later", {"x": 1}, message_group_id=42)  # not a string: its text
        assert await unfinished(runtime) == 1


async def test_cli_emit_checks_the_data_against_the_subscribers(
    tmp_path: Path, any_db_url: str
) -> None:
    steps = write_steps(tmp_path, STEPS)
    env = {"STEPS_DIR": str(steps), "DATABASE_URL": any_db_url}
    bad = run_cli("emit", "typed", '{"id": "o1", "quantity": "many"}', env=env)
    unknown = run_cli("emit", "nobody.listens", "{}", env=env)
    not_json = run_cli("emit", "typed", "{oops", env=env)
    good = run_cli("emit", "typed", '{"id": "o1", "quantity": 3}', env=env)
    assert bad.returncode == 2 and "quantity" in bad.stderr and "'Typed'" in bad.stderr
    assert unknown.returncode == 2 and "nobody.listens" in unknown.stderr
    assert not_json.returncode == 2 and "not JSON" in not_json.stderr
    assert good.returncode == 0 and good.stdout.startswith("emitted typed")
    async with producer(any_db_url, steps) as runtime:
        assert await unfinished(runtime) == 1


async def test_cli_dlq_lists_and_replays(tmp_path: Path, any_db_url: str) -> None:
    steps = write_steps(tmp_path, STEPS)
    env = {"STEPS_DIR": str(steps), "DATABASE_URL": any_db_url}
    async with producer(any_db_url, steps) as runtime:
        await runtime.emit("typed", {"id": "o2", "quantity": 500}, trace_id="trace-dlq-0001")
        with workers(any_db_url, steps) as procs:
            start_worker(procs, any_db_url, steps)
            letters = await eventually(runtime.dead_letters, timeout=30)
        listed = run_cli("dlq", "list", env=env)
        as_json = json.loads(run_cli("dlq", "list", "--json", env=env).stdout)
        nothing = run_cli("dlq", "replay", env=env)
        replayed = run_cli("dlq", "replay", "--all", env=env)
        again = run_cli("dlq", "replay", str(letters[0]["id"]), env=env)
        left = await unfinished(runtime)
    assert (
        f"#{letters[0]['id']}  Typed  topic=typed  attempts=1  trace=trace-dlq-0001"
        in listed.stdout
    )
    assert "ValueError: too many" in listed.stdout
    assert as_json[0]["data"] == {"id": "o2", "quantity": 500}
    assert nothing.returncode == 2
    assert replayed.stdout.startswith("replayed 1 dead letter(s)")
    assert again.stdout.startswith("replayed 0")
    assert left == 1  # back in the queue, once


@pytest.mark.slow
async def test_two_workers_on_postgres_never_run_one_delivery_at_once(
    tmp_path: Path, pg_url: str
) -> None:
    overlap = {
        "overlap_step.py": """
            import asyncio, os
            config = {"name": "Overlap", "type": "event", "subscribes": ["overlap"]}
            async def handler(event, ctx):
                path = os.path.join(os.environ["MARKER_DIR"], "running-" + event.id)
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    open(os.path.join(os.environ["MARKER_DIR"], "OVERLAP-" + event.id), "w").close()
                    raise
                os.close(fd)
                await asyncio.sleep(0.002)
                os.remove(path)
                await ctx.state.increment("overlap", "runs")
        """
    }
    steps = write_steps(tmp_path, overlap)
    async with producer(pg_url, steps) as runtime:
        with workers(pg_url, steps) as procs:
            for _ in range(3):
                start_worker(procs, pg_url, steps, CONCURRENCY="32")
            await runtime.emit_many([{"topic": "overlap", "data": {}} for _ in range(600)])
            await eventually(lambda: _eq(state(runtime, "overlap", "runs"), 600), timeout=60)
    assert list(steps.parent.glob("OVERLAP-*")) == []


async def _eq(awaitable: Any, expected: Any) -> bool:
    return bool(await awaitable == expected)


async def _true(value: bool) -> bool:
    return value


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.3)  # long enough for a due delivery to run; this one is not due
