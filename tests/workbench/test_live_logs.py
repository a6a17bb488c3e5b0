"""Live logs over Server-Sent Events, from a real server on a loopback port."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from tests.workbench.demo import demo_app, demo_settings, live_server


async def read_events(response: httpx.Response, until: Any) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            records.append(json.loads(line[6:]))
            if until(records):
                return records
    return records


async def test_a_log_line_of_a_just_posted_message_is_pushed_live(
    tmp_path: Path, db_url: str
) -> None:
    app = demo_app(demo_settings(tmp_path, db_url))
    async with (
        live_server(app) as base,
        httpx.AsyncClient(base_url=base, timeout=20) as client,
        client.stream(
            "GET", "/workbench/api/logs/stream", params={"step": "ProcessMessage"}
        ) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        reader = asyncio.create_task(read_events(stream, lambda records: len(records) >= 1))
        reply = await client.post(
            "/messages", json={"text": "live!"}, headers={"X-Trace-Id": "trace-live-0001"}
        )
        assert reply.status_code == 202
        records = await asyncio.wait_for(reader, 15)
    assert records[0]["message"] == "Processing message"
    assert records[0]["step"] == "ProcessMessage"  # the filter applies to the live feed
    assert records[0]["trace_id"] == "trace-live-0001"


async def test_a_stream_resumes_after_the_last_seen_record(tmp_path: Path, db_url: str) -> None:
    app = demo_app(demo_settings(tmp_path, db_url))
    async with live_server(app) as base, httpx.AsyncClient(base_url=base, timeout=20) as client:
        for n in range(3):
            await client.post("/messages", json={"text": f"n{n}"})
        logs = (await client.get("/workbench/api/logs", params={"q": "Sending"})).json()["logs"]
        first_seq = logs[0]["seq"]
        async with client.stream(
            "GET",
            "/workbench/api/logs/stream",
            params={"q": "Sending", "max_seconds": 1},
            headers={"Last-Event-ID": str(first_seq)},
        ) as stream:
            records = await read_events(stream, lambda records: False)  # ends by itself
    assert [r["seq"] for r in records] == [r["seq"] for r in logs[1:]]


async def test_records_logged_from_a_worker_thread_reach_live_readers() -> None:
    # sync handlers run in a thread pool: their records must still wake the event loop
    from app.workbench.logs import LogHub

    hub = LogHub(capacity=100)
    hub.start(asyncio.get_running_loop())

    async def first_batch() -> list[dict[str, Any]]:
        async for batch in hub.follow(after=0, max_seconds=10):
            if batch:
                return batch
        return []

    reader = asyncio.create_task(first_batch())
    await asyncio.sleep(0)  # the reader is waiting before anything is logged
    await asyncio.to_thread(
        hub.sink, {"event": "from a thread", "level": "info", "step": "SyncStep", "n": 1}
    )
    batch = await asyncio.wait_for(reader, 5)
    hub.close()
    assert [(r["message"], r["step"], r["fields"]) for r in batch] == [
        ("from a thread", "SyncStep", {"n": 1})
    ]
