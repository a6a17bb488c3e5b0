"""Idle cost: SQL statements a second sent by an idle Stepwise process, on SQLite and Postgres.

Each process is the real CLI (`python -m app worker`, `python -m app api`, and `python -m app
dev --no-reload`: API, worker and cron together) with the project's own steps, started through
this script's counting wrapper: a SQLAlchemy listener on every engine counts the statements the
process sends (its LISTEN connection on Postgres, one `SELECT 1` every 30 s, is not counted).
After a warm-up, statements are counted over a window with no traffic at all. The target is
<= 2 statements/s per process; the baseline is a process that sends none.

    .venv/bin/python bench/idle.py [--seconds 20] [--backends sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import runpy
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import free_port, stop  # noqa: E402

WARM_UP = 5.0
TARGET = 2.0


def child(out: str, argv: list[str]) -> None:
    """In the measured process: count statements, write `time count` to `out` twice a second,
    then run `python -m app <argv>`."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    count = 0

    def counted(*_: object) -> None:
        nonlocal count
        count += 1

    event.listen(Engine, "before_cursor_execute", counted)

    def report() -> None:
        while True:
            Path(out).write_text(f"{time.monotonic()} {count}")
            time.sleep(0.5)

    threading.Thread(target=report, daemon=True).start()
    sys.argv = ["app", *argv]
    runpy.run_module("app", run_name="__main__")


def reading(path: Path) -> tuple[float, int]:
    for _ in range(50):
        text = path.read_text() if path.exists() else ""
        if text:
            at, count = text.split()
            return float(at), int(count)
        time.sleep(0.1)
    raise SystemExit(f"the measured process never reported ({path})")


async def measure(url: str, command: list[str], seconds: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "count")
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "LOG_LEVEL": "WARNING",
            "PORT": str(free_port()),
            "PYTHONPATH": str(ROOT),
        }
        proc = subprocess.Popen(
            [sys.executable, __file__, "--child", str(out), "--", *command],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await asyncio.sleep(WARM_UP)
            if proc.poll() is not None:
                raise SystemExit(f"{' '.join(command)} exited with {proc.returncode}")
            t0, c0 = reading(out)
            await asyncio.sleep(seconds)
            t1, c1 = reading(out)
        finally:
            stop([proc])
    return (c1 - c0) / (t1 - t0)


async def main() -> None:
    from bench.events import database

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--backends", default="sqlite,postgres")
    opts = parser.parse_args()
    commands = [["worker"], ["api"], ["dev", "--no-reload"]]
    print(f"statements/s of an idle process over {opts.seconds:g}s (target <= {TARGET:g})")
    for backend in opts.backends.split(","):
        async with database(backend) as url:
            for command in commands:
                rate = await measure(url, command, opts.seconds)
                verdict = "ok" if rate <= TARGET else "OVER TARGET"
                print(f"{backend:<9} {' '.join(command):<18} {rate:6.2f} statements/s   {verdict}")


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--child" and sys.argv[3] == "--":
        child(sys.argv[2], sys.argv[4:])
    else:
        asyncio.run(main())
