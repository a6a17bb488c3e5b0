"""Requests/s of Stepwise's GET /health (full middleware stack) against a bare FastAPI route.

Both apps run under uvicorn (one worker, uvloop, httptools) in this same run, on loopback, driven
by the same closed-loop httpx client. Prints the figures and their ratio.

    .venv/bin/python bench/api_overhead.py [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import free_port, stop, wait_up  # noqa: E402

BARE_APP = """
from fastapi import FastAPI
app = FastAPI()

@app.get("/health")
async def health():
    return {"status": "ok"}
"""


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", *args, "--log-level", "warning", "--no-access-log"],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def drive(port: int, path: str, seconds: float, connections: int) -> tuple[float, int]:
    """A minimal keep-alive HTTP/1.1 load loop (httpx itself tops out near 1,000 req/s)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    done = errors = 0
    deadline = time.perf_counter() + seconds

    async def one_connection() -> None:
        nonlocal done, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
                if head.startswith(b"HTTP/1.1 200"):
                    done += 1
                else:
                    errors += 1
        finally:
            writer.close()

    start_t = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return done / (time.perf_counter() - start_t), errors


async def measure(
    name: str, args: list[str], env: dict[str, str], seconds: float, connections: int
) -> float:
    port = free_port()
    proc = start([*args, "--port", str(port)], env)
    try:
        await wait_up(f"http://127.0.0.1:{port}/health", timeout=10, below=300)
        await drive(port, "/health", 1.0, connections)  # warm up
        rps, errors = await drive(port, "/health", seconds, connections)
    finally:
        stop([proc], timeout=20)
    print(f"{name:<28} {rps:>9,.0f} req/s   errors: {errors}")
    return rps


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="alternate the two apps this often")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "bare_app.py").write_text(BARE_APP)
        db = Path(tmp, "bench.db")
        env = {
            "DATABASE_URL": f"sqlite:///{db}",
            "LOG_LEVEL": "WARNING",
            "RECORD_RUNS": os.environ.get("RECORD_RUNS", "true"),
            "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}",
        }
        subprocess.run(
            [sys.executable, "-m", "app", "migrate"],
            cwd=ROOT,
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        bare_args = ["bare_app:app", "--host", "127.0.0.1"]
        ours_args = ["app.main:create_api_app", "--factory", "--host", "127.0.0.1"]
        bare, ours = [], []
        print(
            f"GET /health, {opts.connections} connections, {opts.seconds:g}s a run, one uvicorn worker"
        )
        for _ in range(opts.rounds):
            bare.append(
                await measure("bare FastAPI route", bare_args, env, opts.seconds, opts.connections)
            )
            ours.append(
                await measure(
                    "Stepwise /health step", ours_args, env, opts.seconds, opts.connections
                )
            )
        best_bare, best_ours = max(bare), max(ours)
        print(
            f"best of {opts.rounds}: bare {best_bare:,.0f} req/s, Stepwise {best_ours:,.0f} req/s"
        )
        print(f"ratio Stepwise / bare FastAPI: {best_ours / best_bare:.2f}  (target >= 0.85)")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
