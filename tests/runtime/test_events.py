"""Event steps: the transactional outbox, retries with backoff, timeouts, dead letters, replay."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from app.runtime import ManualClock, Runtime
from app.runtime._unit import Unit
from app.runtime._worker import MAX_INTERRUPTIONS
from tests.runtime.conftest import step_app
from tests.support import eventually, runtime_of

FLAKY = {
    "start_step.py": """
        config = {"name": "Start", "type": "api", "path": "/start/{kind}", "method": "POST",
                  "auth": "public", "emits": ["job.flaky", "job.doomed", "job.slow", "job.fanout"]}
        async def handler(req, ctx):
            kind = req.params["kind"]
            await ctx.state.set("api", "last", kind)
            event_id = await ctx.emit({"topic": f"job.{kind}", "data": {"n": 1}})
            if req.query.get("fail"):
                raise RuntimeError("the API step fails after emitting")
            return {"status": 202, "body": {"event_id": event_id}}
    """,
    "flaky_step.py": """
        CALLS = []
        config = {"name": "Flaky", "type": "event", "subscribes": ["job.flaky"],
                  "retry": {"max_attempts": 3, "backoff": "exponential", "delay": 10,
                            "jitter": False}}
        async def handler(event, ctx):
            CALLS.append((ctx.attempt, ctx.trace_id, event.data["n"], event["topic"]))
            await ctx.state.set("flaky", f"attempt-{ctx.attempt}", True)
            await ctx.state.increment("flaky", "count")
            if ctx.attempt < 3:
                raise ValueError(f"not yet (attempt {ctx.attempt})")
    """,
    "doomed_step.py": """
        CALLS = []
        config = {"name": "Doomed", "type": "event", "subscribes": ["job.doomed"],
                  "retry": {"max_attempts": 2, "backoff": "fixed", "delay": 5, "jitter": False}}
        async def handler(event, ctx):
            CALLS.append(ctx.attempt)
            if await ctx.state.get("doomed", "fixed") is None:
                raise RuntimeError(f"always fails (attempt {ctx.attempt})")
    """,
    "slow_step.py": """
        import asyncio
        CALLS = []
        config = {"name": "Slow", "type": "event", "subscribes": ["job.slow"],
                  "retry": {"max_attempts": 2, "backoff": "fixed", "delay": 0, "timeout": 0.2}}
        async def handler(event, ctx):
            CALLS.append(ctx.attempt)
            await ctx.state.set("slow", f"attempt-{ctx.attempt}", True)
            if ctx.attempt == 1:
                await asyncio.sleep(30)
    """,
    "fan_a_step.py": """
        CALLS = []
        config = {"name": "FanA", "type": "event", "subscribes": ["job.fanout"],
                  "retry": {"max_attempts": 3, "delay": 0}}
        async def handler(event, ctx):
            CALLS.append(ctx.attempt)
            await ctx.state.increment("fan", "a")
    """,
    "fan_b_step.py": """
        CALLS = []
        config = {"name": "FanB", "type": "event", "subscribes": ["job.fanout"],
                  "retry": {"max_attempts": 3, "delay": 0, "jitter": False}}
        async def handler(event, ctx):
            CALLS.append(ctx.attempt)
            if ctx.attempt == 1:
                raise RuntimeError("B fails once; A is not run again")
            await ctx.state.increment("fan", "b")
    """,
}


def calls(client: httpx.AsyncClient, step: str) -> list[Any]:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    module = sys.modules[runtime.registry.get(step).module]
    return module.CALLS  # type: ignore[no-any-return]


async def state_of(client: httpx.AsyncClient, group: str) -> dict[str, Any]:
    runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
    from app.runtime._unit import Unit

    return await Unit(runtime.engine, runtime.clock.now).get_group(group)


async def test_a_handler_failing_twice_runs_three_times_with_backoff(
    tmp_path: Path, any_db_url: str
) -> None:
    clock = ManualClock(start=1_000_000.0)
    async with step_app(tmp_path, any_db_url, FLAKY, clock=clock) as client:
        reply = await client.post("/start/flaky", headers={"X-Trace-Id": "trace-flaky-1"})
        assert reply.status_code == 202
        await eventually(lambda: _async(len(calls(client, "Flaky")) == 1))
        # Wait for each failure to be recorded before moving the clock: a jump of the clock
        # past a running delivery's lease would (rightly) hand it to another claim.
        await eventually(lambda: _pending_after(client, 1))
        # exponential: 10 s before the 2nd attempt, 20 s before the 3rd; nothing runs early
        clock.advance(9.5)
        await _settle(client)
        assert len(calls(client, "Flaky")) == 1
        clock.advance(0.6)
        await eventually(lambda: _async(len(calls(client, "Flaky")) == 2))
        await eventually(lambda: _pending_after(client, 2))
        clock.advance(19.5)
        await _settle(client)
        assert len(calls(client, "Flaky")) == 2
        clock.advance(0.6)
        await eventually(lambda: _async(len(calls(client, "Flaky")) == 3))
        final = await eventually(lambda: state_of(client, "flaky"))
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        dead = await runtime.dead_letters()
    assert [c[0] for c in calls(client, "Flaky")] == [1, 2, 3]
    assert {c[1] for c in calls(client, "Flaky")} == {"trace-flaky-1"}  # the trace rides along
    assert calls(client, "Flaky")[0][2:] == (1, "job.flaky")
    # only the successful attempt's writes exist
    assert final == {"attempt-3": True, "count": 1}
    assert dead == []


async def test_a_handler_that_always_fails_is_dead_lettered_then_replayed(
    tmp_path: Path, any_db_url: str
) -> None:
    clock = ManualClock(start=2_000_000.0)
    async with step_app(tmp_path, any_db_url, FLAKY, clock=clock) as client:
        runtime: Runtime = client.app.state.runtime  # type: ignore[attr-defined]
        await client.post("/start/doomed", headers={"X-Trace-Id": "trace-doomed-1"})
        await eventually(lambda: _async(len(calls(client, "Doomed")) == 1))
        await eventually(lambda: _pending_after(client, 1))
        clock.advance(5.1)
        dead = await eventually(runtime.dead_letters)
        assert len(dead) == 1
        letter = dead[0]
        assert letter["step"] == "Doomed" and letter["topic"] == "job.doomed"
        assert letter["attempts"] == 2 and letter["trace_id"] == "trace-doomed-1"
        assert letter["data"] == {"n": 1}
        assert [e["attempt"] for e in letter["errors"]] == [1, 2]
        assert "always fails (attempt 2)" in letter["errors"][1]["error"]
        # fix the cause, then replay: it runs again, succeeds, and leaves the dead list
        from app.runtime._unit import Unit

        unit = Unit(runtime.engine, clock.now)
        unit.set("doomed", "fixed", True)
        await unit.commit()
        assert await runtime.replay([letter["id"]]) == [letter["id"]]
        assert await runtime.replay([letter["id"]]) == []  # replaying twice is a no-op
        await eventually(lambda: _async(len(calls(client, "Doomed")) == 3))
        await eventually(lambda: _async_not(runtime.dead_letters))

        async def finished() -> dict[str, Any] | None:
            # The handler has returned (calls == 3); the ack commits just after it.
            delivery = await runtime.delivery(letter["id"])
            return delivery if delivery and delivery["status"] != "running" else None

        delivery = await eventually(finished)
    assert calls(client, "Doomed") == [1, 2, 1]
    assert delivery["status"] == "done"


async def test_a_handler_past_its_timeout_is_cancelled_and_retried(
    tmp_path: Path, any_db_url: str
) -> None:
    async with step_app(tmp_path, any_db_url, FLAKY) as client:
        await client.post("/start/slow")
        await eventually(lambda: _async(calls(client, "Slow") == [1, 2]), timeout=10)
        final = await eventually(lambda: state_of(client, "slow"))
    assert final == {"attempt-2": True}


async def test_event_and_trace_ids_grow_with_time(tmp_path: Path, any_db_url: str) -> None:
    """Time-ordered ids (the time in ms first, then 80 random bits): new rows land at the end of
    the id and trace indexes instead of on random pages, and a trace id is still W3C's."""
    async with step_app(tmp_path, any_db_url, FLAKY) as client:
        runtime = runtime_of(client)
        ids, traces = [], []
        for _ in range(3):
            ids.append(await runtime.emit("job.fanout", {"n": 1}))
            traces.append((await client.post("/start/fanout")).headers["x-trace-id"])
            await asyncio.sleep(0.002)
    for made in (ids, traces):
        assert made == sorted(made) and len(set(made)) == 3
        assert all(re.fullmatch("[0-9a-f]{32}", value) for value in made)
        now_ms = time.time_ns() // 1_000_000
        assert all(0 <= now_ms - int(value[:12], 16) < 60_000 for value in made)


async def test_each_subscriber_gets_its_own_delivery_and_retries(
    tmp_path: Path, any_db_url: str
) -> None:
    async with step_app(tmp_path, any_db_url, FLAKY) as client:
        await client.post("/start/fanout")
        await eventually(lambda: _async(calls(client, "FanB") == [1, 2]))
        # Each delivery's state commits just after its handler returns: wait for both.
        final = await eventually(lambda: _has(state_of(client, "fan"), "a", "b"))
    assert calls(client, "FanA") == [1]
    assert final == {"a": 1, "b": 1}


async def test_an_api_step_that_raises_emits_nothing(tmp_path: Path, any_db_url: str) -> None:
    async with step_app(tmp_path, any_db_url, FLAKY) as client:
        failed = await client.post("/start/fanout?fail=1")
        ok = await client.post("/start/flaky")
        await eventually(lambda: _async(len(calls(client, "Flaky")) >= 1))
        api_state = await state_of(client, "api")
    assert failed.status_code == 500
    assert ok.status_code == 202
    assert calls(client, "FanA") == [] and calls(client, "FanB") == []
    assert api_state == {"last": "flaky"}


async def _pending_after(client: httpx.AsyncClient, attempts: int) -> bool:
    """The (only) delivery's failed attempt is recorded: it waits for its retry."""
    delivery = await runtime_of(client).delivery(1)
    return delivery is not None and (delivery["status"], delivery["attempts"]) == (
        "pending",
        attempts,
    )


async def _async(value: Any) -> Any:
    return value


async def _async_not(fn: Any) -> bool:
    return not await fn()


async def _has(awaitable: Any, *keys: str) -> Any:
    value = await awaitable
    return value if all(key in value for key in keys) else None


async def _settle(client: httpx.AsyncClient) -> None:
    """Give the worker a moment to act on the clock (it would run now if it were due)."""
    import asyncio

    await asyncio.sleep(0.3)


async def test_old_finished_work_is_forgotten_but_dead_letters_are_kept(
    tmp_path: Path, db_url: str
) -> None:
    clock = ManualClock(start=4_000_000.0)
    async with step_app(tmp_path, db_url, FLAKY, clock=clock) as client:
        runtime = runtime_of(client)
        await client.post("/start/fanout")
        await client.post("/start/doomed")
        await eventually(lambda: _async(len(calls(client, "Doomed")) == 1))
        await eventually(lambda: _pending_after_step(client, "Doomed", 1))
        clock.advance(5.1)
        await eventually(runtime.dead_letters)
        await eventually(lambda: _async(len(calls(client, "FanB")) == 2))
        await eventually(lambda: _async_not(lambda: _unfinished(client)))
        await runtime.recorder.flush()
        kept = await runtime.purge_history()
        clock.advance(runtime.settings.history_hours * 3600 + 1)
        removed = await runtime.purge_history()
        dead = await runtime.dead_letters()
    assert kept == {"deliveries": 0, "events": 0, "runs": 0}
    assert removed["deliveries"] == 2  # FanA and FanB
    assert removed["events"] == 1  # the fanout event; the dead letter's event stays
    assert removed["runs"] >= 5
    assert [d["step"] for d in dead] == ["Doomed"]


async def _pending_after_step(client: httpx.AsyncClient, step: str, attempts: int) -> bool:
    async with runtime_of(client).read_connection() as conn:
        from sqlalchemy import select

        from app.runtime._schema import deliveries

        row = (
            await conn.execute(
                select(deliveries.c.status, deliveries.c.attempts).where(deliveries.c.step == step)
            )
        ).first()
    return row is not None and tuple(row) == ("pending", attempts)


async def _unfinished(client: httpx.AsyncClient) -> bool:
    async with runtime_of(client).read_connection() as conn:
        from sqlalchemy import func, select

        from app.runtime._schema import deliveries

        count = (
            await conn.execute(
                select(func.count())
                .select_from(deliveries)
                .where(deliveries.c.status.in_(("pending", "running")))
            )
        ).scalar_one()
    return bool(count)


HANGS = {
    "start_step.py": """
        config = {"name": "Start", "type": "api", "path": "/start", "method": "POST",
                  "auth": "public", "emits": ["job.hangs"]}
        async def handler(req, ctx):
            await ctx.emit({"topic": "job.hangs", "data": {}})
            return {"status": 202, "body": {}}
    """,
    "hangs_step.py": """
        import asyncio
        CALLS = []
        config = {"name": "Hangs", "type": "event", "subscribes": ["job.hangs"],
                  "retry": {"max_attempts": 2, "delay": 0, "timeout": 3600}}
        async def handler(event, ctx):
            CALLS.append(ctx.attempt)
            await asyncio.sleep(3600)
    """,
}


async def test_a_delivery_whose_leases_keep_expiring_is_dead_lettered_not_run_forever(
    tmp_path: Path, any_db_url: str
) -> None:
    """A handler that takes its worker down (here: hangs while the clock jumps past its lease,
    as if the process had died) is run again as the same attempt, but not forever: after
    MAX_INTERRUPTIONS runs cut short, the next claim dead-letters it without running it."""
    clock = ManualClock(start=3_000_000.0)
    async with step_app(
        tmp_path, any_db_url, HANGS, clock=clock, shutdown_grace_seconds=0.2
    ) as client:
        runtime = runtime_of(client)
        await client.post("/start")
        for runs in range(1, MAX_INTERRUPTIONS + 1):
            await eventually(lambda n=runs: _async(len(calls(client, "Hangs")) == n))
            clock.advance(60)  # past the 15 s lease: the run is as good as dead
        dead = await eventually(runtime.dead_letters)
        await _settle(client)
        # Each cut-short run was attempt 1 again: a crash does not use up an attempt.
        assert calls(client, "Hangs") == [1] * MAX_INTERRUPTIONS
    assert len(dead) == 1 and dead[0]["attempts"] == 1
    assert f"its worker stopped {MAX_INTERRUPTIONS} times" in dead[0]["errors"][-1]["error"]


CRASHES_ON_LAST = {
    "start_step.py": HANGS["start_step.py"],
    "flaky_step.py": """
        import asyncio
        CALLS = []
        config = {"name": "Hangs", "type": "event", "subscribes": ["job.hangs"],
                  "retry": {"max_attempts": 2, "delay": 0, "timeout": 3600}}
        async def handler(event, ctx):
            CALLS.append(ctx.attempt)
            if len(CALLS) == 1:
                raise RuntimeError("first attempt fails")
            if len(CALLS) == 2:
                await asyncio.sleep(3600)  # the last attempt: its worker "dies" here
            await ctx.state.set("flaky", "done", ctx.attempt)
    """,
}


async def test_a_worker_dying_during_the_last_attempt_runs_that_attempt_again(
    tmp_path: Path, any_db_url: str
) -> None:
    """Attempt 1 fails, attempt 2 (the last) is cut short by its worker's death: attempt 2 runs
    again and its outcome counts; nothing is dead-lettered for a crash that was not its own."""
    clock = ManualClock(start=4_000_000.0)
    async with step_app(
        tmp_path, any_db_url, CRASHES_ON_LAST, clock=clock, shutdown_grace_seconds=0.2
    ) as client:
        runtime = runtime_of(client)
        await client.post("/start")
        await eventually(lambda: _async(len(calls(client, "Hangs")) == 2))
        clock.advance(60)  # the lease of the hung last attempt expires
        await eventually(lambda: _async(len(calls(client, "Hangs")) == 3))
        await _settle(client)
        assert calls(client, "Hangs") == [1, 2, 2]
        assert await runtime.dead_letters() == []
        state = await Unit(runtime.engine, runtime.clock.now).get("flaky", "done")
        assert state == 2
