"""Per-call cost of a JavaScript step against the same step written in Python.

Both steps run in this same process on the same runtime (SQLite in a temporary folder), called
through the engine's one interface, `step.handler.invoke(req, ctx)`, with a real `ctx` on a real
unit of work (rolled back after each call, so that the database does not grow). Calls alternate
Python / JavaScript so that both see the same machine. Two pairs of steps:

- `echo`: returns its input; no ctx call: the bare cost of a round trip to Node.
- `writes`: ten `state.set` and one `emit` (buffered by the unit, no database I/O): eleven ctx
  calls, so the cost of one ctx call round trip.
- `work`: `logger.info`, `state.get` (a database read), `state.set`, `emit`: a typical handler.

Prints p50 / p90 / p99 per call, the time JavaScript adds at p50 (target: < 1 ms), the ratio, and
calls/s with many calls in flight at once.

    .venv/bin/python bench/polyglot.py [--calls 3000] [--concurrency 64] [--processes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.runtime import Runtime, RuntimeSettings, configure_logging, discover  # noqa: E402
from app.runtime._api import ApiRequest  # noqa: E402
from app.runtime._db import create_engine  # noqa: E402
from app.runtime._schema import metadata  # noqa: E402
from app.runtime._unit import Unit  # noqa: E402

STEPS = {
    "echo_py_step.py": """
        config = {"name": "EchoPy", "type": "api", "path": "/py/echo", "method": "POST"}

        async def handler(req, ctx):
            return {"status": 200, "body": {"echo": req.body}}
    """,
    "echo.step.js": """
        export const config = { name: 'EchoJs', type: 'api', path: '/js/echo', method: 'POST' };

        export const handler = async (req) => ({ status: 200, body: { echo: req.body } });
    """,
    "writes_py_step.py": """
        config = {"name": "WritesPy", "type": "api", "path": "/py/writes", "method": "POST",
                  "emits": ["bench.done"]}

        async def handler(req, ctx):
            for i in range(10):
                await ctx.state.set("bench", f"k{i}", i)
            await ctx.emit({"topic": "bench.done", "data": {"n": 10, "seen": None}})
            return {"status": 202, "body": {"ok": True}}
    """,
    "writes.step.js": """
        export const config = { name: 'WritesJs', type: 'api', path: '/js/writes', method: 'POST',
                                emits: ['bench.done'] };

        export const handler = async (req, { state, emit }) => {
          for (let i = 0; i < 10; i += 1) await state.set('bench', `k${i}`, i);
          await emit({ topic: 'bench.done', data: { n: 10, seen: null } });
          return { status: 202, body: { ok: true } };
        };
    """,
    "work_py_step.py": """
        config = {"name": "WorkPy", "type": "api", "path": "/py/work", "method": "POST",
                  "emits": ["bench.done"]}

        async def handler(req, ctx):
            ctx.logger.info("working", n=req.body["n"])
            seen = await ctx.state.get("bench", "last")
            await ctx.state.set("bench", "last", req.body["n"])
            await ctx.emit({"topic": "bench.done", "data": {"n": req.body["n"], "seen": seen}})
            return {"status": 202, "body": {"ok": True}}
    """,
    "work.step.js": """
        export const config = { name: 'WorkJs', type: 'api', path: '/js/work', method: 'POST',
                                emits: ['bench.done'] };

        export const handler = async (req, { logger, state, emit }) => {
          logger.info('working', { n: req.body.n });
          const seen = await state.get('bench', 'last');
          await state.set('bench', 'last', req.body.n);
          await emit({ topic: 'bench.done', data: { n: req.body.n, seen } });
          return { status: 202, body: { ok: true } };
        };
    """,
    "done_step.py": """
        config = {"name": "Done", "type": "event", "subscribes": ["bench.done"]}

        async def handler(event, ctx):
            pass
    """,
}

BODY = {"n": 1, "text": "a short message, as an API would get", "tags": ["a", "b", "c"]}


def request() -> ApiRequest:
    return ApiRequest(
        body=BODY, query={}, params={}, headers={}, user=None, method="POST", path="/"
    )


async def one_call(runtime: Runtime, name: str) -> float:
    step = runtime.registry.get(name)
    assert step.handler is not None
    unit = Unit(runtime.engine, runtime.clock.now)
    ctx = runtime.context(step, unit, trace_id="bench")
    started = time.perf_counter()
    await step.handler.invoke(request(), ctx)
    took = time.perf_counter() - started
    await unit.rollback()
    return took


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1e6


async def latency(runtime: Runtime, py: str, js: str, calls: int) -> dict[str, list[float]]:
    for _ in range(200):  # warm up both (imports, JIT, connection pool)
        await one_call(runtime, py)
        await one_call(runtime, js)
    out: dict[str, list[float]] = {py: [], js: []}
    for _ in range(calls):
        out[py].append(await one_call(runtime, py))
        out[js].append(await one_call(runtime, js))
    return out


async def throughput(runtime: Runtime, name: str, calls: int, concurrency: int) -> float:
    queue = iter(range(calls))

    async def caller() -> None:
        for _ in queue:
            await one_call(runtime, name)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return calls / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    if shutil.which("node") is None:
        raise SystemExit("Node.js is not installed: nothing to compare")
    configure_logging("WARNING")  # records below WARNING are dropped alike in both languages
    with tempfile.TemporaryDirectory(prefix="stepwise-bench-") as tmp:
        folder = Path(tmp) / "bench_polyglot_steps"
        folder.mkdir()
        (folder / "__init__.py").write_text("")
        for name, source in STEPS.items():
            (folder / name).write_text(textwrap.dedent(source))
        engine = create_engine(f"sqlite:///{tmp}/bench.db", sqlite_synchronous="NORMAL")
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        settings = RuntimeSettings(record_runs=False, node_processes=args.processes)
        runtime = Runtime(discover(folder), engine, settings=settings)
        assert runtime.node is not None
        await runtime.node.start()
        try:
            print(
                f"{args.calls} calls each, alternating; Node {runtime.node.pids} "
                f"({args.processes} process(es)); Python {sys.version.split()[0]}, {args.loop}"
            )
            print(f"{'step':<8}{'lang':<6}{'p50 µs':>9}{'p90 µs':>9}{'p99 µs':>9}")
            pairs = (
                ("EchoPy", "EchoJs", "echo", 0),
                ("WritesPy", "WritesJs", "writes", 11),
                ("WorkPy", "WorkJs", "work", 3),
            )
            for py, js, label, calls in pairs:
                figures = await latency(runtime, py, js, args.calls)
                for name, lang in ((py, "py"), (js, "js")):
                    values = figures[name]
                    print(
                        f"{label:<8}{lang:<6}{pct(values, 0.5):>9.0f}{pct(values, 0.9):>9.0f}"
                        f"{pct(values, 0.99):>9.0f}"
                    )
                added = (statistics.median(figures[js]) - statistics.median(figures[py])) * 1e3
                ratio = statistics.median(figures[js]) / statistics.median(figures[py])
                verdict = "met" if added < 1.0 else "NOT met"
                per_call = f", {added / calls * 1000:.0f} µs per ctx call" if calls else ""
                print(
                    f"  {label}: JavaScript adds {added:.3f} ms per call at p50{per_call} "
                    f"(x{ratio:.1f} the Python step; target < 1 ms: {verdict})"
                )
            print(f"throughput, {args.concurrency} calls in flight:")
            for name in ("EchoPy", "EchoJs", "WritesPy", "WritesJs", "WorkPy", "WorkJs"):
                rate = await throughput(runtime, name, args.calls, args.concurrency)
                print(f"  {name:<9}{rate:>10.0f} calls/s")
        finally:
            await runtime.node.stop()
            await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="uvloop: as under uvicorn"
    )
    options = parser.parse_args()
    if options.loop == "uvloop":
        import uvloop

        uvloop.run(main(options))
    else:
        asyncio.run(main(options))
