"""ctx.state on SQLite and Postgres: groups, JSON values, atomic increment and update."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.runtime.conftest import step_app
from tests.support import ROOT, write_steps

STATE_STEPS = {
    "ops_step.py": """
        config = {"name": "Ops", "type": "api", "path": "/ops", "method": "POST", "auth": "public"}
        async def handler(req, ctx):
            s = ctx.state
            await s.set("orders", "a", {"n": 1, "tags": ["x"]})
            await s.set("orders", "b", [1, 2, 3])
            await s.set("order", "a", "not in orders")
            await s.set("orders", "gone", True)
            await s.delete("orders", "gone")
            seen_own_write = await s.get("orders", "a")
            counter = await s.increment("counters", "c", by=5)
            counter = await s.increment("counters", "c")
            doubled = await s.update("counters", "c", lambda v: v * 2)
            return {"status": 200, "body": {"own": seen_own_write, "counter": counter,
                                            "doubled": doubled}}
    """,
    "read_step.py": """
        config = {"name": "Read", "type": "api", "path": "/read/{group}", "method": "GET",
                  "auth": "public"}
        async def handler(req, ctx):
            return {"status": 200, "body": await ctx.state.get_group(req.params["group"])}
    """,
    "clear_step.py": """
        config = {"name": "Clear", "type": "api", "path": "/clear/{group}", "method": "POST",
                  "auth": "public"}
        async def handler(req, ctx):
            await ctx.state.clear(req.params["group"])
            after = await ctx.state.get_group(req.params["group"])
            return {"status": 200, "body": {"after": after}}
    """,
    "fail_step.py": """
        config = {"name": "Fail", "type": "api", "path": "/fail", "method": "POST", "auth": "public"}
        async def handler(req, ctx):
            await ctx.state.set("orders", "a", "overwritten")
            await ctx.state.increment("counters", "c", by=1000)
            raise RuntimeError("after writing")
    """,
    "inc_step.py": """
        config = {"name": "Inc", "type": "api", "path": "/inc", "method": "POST", "auth": "public"}
        async def handler(req, ctx):
            return {"status": 200, "body": {"value": await ctx.state.increment("race", "n")}}
    """,
    "append_step.py": """
        import asyncio
        config = {"name": "Append", "type": "api", "path": "/append/{item}", "method": "POST",
                  "auth": "public"}
        async def handler(req, ctx):
            def add(items):
                return [*(items or []), req.params["item"]]
            result = await ctx.state.update("race", "list", add)
            await asyncio.sleep(0)
            return {"status": 200, "body": {"size": len(result)}}
    """,
}


async def test_state_operations_by_group(tmp_path: Path, any_db_url: str) -> None:
    async with step_app(tmp_path, any_db_url, STATE_STEPS) as client:
        ops = (await client.post("/ops")).json()
        orders = (await client.get("/read/orders")).json()
        order = (await client.get("/read/order")).json()
        cleared = (await client.post("/clear/orders")).json()
        after = (await client.get("/read/orders")).json()
    assert ops == {"own": {"n": 1, "tags": ["x"]}, "counter": 6, "doubled": 12}
    assert orders == {"a": {"n": 1, "tags": ["x"]}, "b": [1, 2, 3]}
    # a group never matches another group that shares its prefix (Motia's getGroup bug)
    assert order == {"a": "not in orders"}
    assert cleared == {"after": {}}
    assert after == {}


async def test_a_handler_that_raises_leaves_no_state_behind(
    tmp_path: Path, any_db_url: str
) -> None:
    async with step_app(tmp_path, any_db_url, STATE_STEPS) as client:
        await client.post("/ops")
        failed = await client.post("/fail")
        orders = (await client.get("/read/orders")).json()
        counters = (await client.get("/read/counters")).json()
    assert failed.status_code == 500
    assert orders["a"] == {"n": 1, "tags": ["x"]}
    assert counters == {"c": 12}


async def test_200_concurrent_increments_give_exactly_200(tmp_path: Path, any_db_url: str) -> None:
    async with step_app(tmp_path, any_db_url, STATE_STEPS) as client:
        replies = await asyncio.gather(*(client.post("/inc") for _ in range(200)))
        final = (await client.get("/read/race")).json()
    values = sorted(r.json()["value"] for r in replies)
    assert final == {"n": 200}
    assert values == list(range(1, 201))  # every caller saw a distinct new value


async def test_concurrent_updates_never_lose_one(tmp_path: Path, any_db_url: str) -> None:
    async with step_app(tmp_path, any_db_url, STATE_STEPS) as client:
        await asyncio.gather(*(client.post(f"/append/{i}") for i in range(60)))
        final = (await client.get("/read/race")).json()
    assert sorted(final["list"], key=int) == [str(i) for i in range(60)]


INCREMENTER = textwrap.dedent(
    """
    import asyncio, sys
    from app.runtime._db import create_engine
    from app.runtime.testing import StepTester

    async def main(url, steps_dir, count):
        engine = create_engine(url)
        async with StepTester("Inc", steps_dir=steps_dir, engine=engine) as tester:
            sem = asyncio.Semaphore(8)
            async def one():
                async with sem:
                    result = await tester.call_api()
                    assert result.status == 200, result
            await asyncio.gather(*(one() for _ in range(count)))
        await engine.dispose()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_increments_from_two_processes_give_exactly_200(
    tmp_path: Path, any_db_url: str
) -> None:
    steps_dir = write_steps(tmp_path, STATE_STEPS)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", INCREMENTER, any_db_url, str(steps_dir), "100"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    async with step_app(tmp_path, any_db_url, STATE_STEPS) as client:
        final = (await client.get("/read/race")).json()
    assert final == {"n": 200}


NUL_STEPS = {
    "lookup_step.py": """
        config = {"name": "Lookup", "type": "api", "path": "/lookup/{key}", "method": "GET",
                  "auth": "public"}
        async def handler(req, ctx):
            key = req.params["key"]
            try:
                await ctx.state.set("things", key, 1)
                written = "stored"
            except ValueError as exc:
                written = str(exc)
            found = await ctx.state.get("things", key)
            group = await ctx.state.get_group(key)
            return {"status": 404 if found is None else 200,
                    "body": {"written": written, "group": group}}
    """,
}


async def test_a_key_with_nul_is_never_found_and_cannot_be_written(
    tmp_path: Path, any_db_url: str
) -> None:
    # Postgres text cannot hold NUL: a read of such a key finds nothing (a 404 of the step's
    # own), a write is refused with a clear error, on both databases alike.
    async with step_app(tmp_path, any_db_url, NUL_STEPS) as client:
        reply = await client.get("/lookup/a%00b")
    assert reply.status_code == 404, reply.text
    assert reply.json() == {
        "written": "state group and key must not contain NUL characters",
        "group": {},
    }
