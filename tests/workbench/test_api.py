"""The Workbench's JSON API, section by section, over HTTP against a real database."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

from app.runtime._schema import stream_items
from tests.support import eventually, runtime_of
from tests.workbench.demo import demo_client

WRITE = {"X-Stepwise-Workbench": "1"}
ADMIN = {"X-Test-User": "u1:admin"}


async def post_message(client: httpx.AsyncClient, text: str, trace_id: str) -> None:
    reply = await client.post("/messages", json={"text": text}, headers={"X-Trace-Id": trace_id})
    assert reply.status_code == 202, reply.text


async def trace_when(client: httpx.AsyncClient, trace_id: str, steps: set[str]) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        reply = await client.get(f"/workbench/api/traces/{trace_id}")
        if reply.status_code != 200:
            return None
        body: dict[str, Any] = reply.json()
        return body if steps <= set(body["steps"]) and body["outcome"] == "ok" else None

    found: dict[str, Any] = await eventually(check)
    return found


# -- flows ----------------------------------------------------------------------------------------


async def test_flows_group_steps_by_their_wiring_not_only_by_label(
    tmp_path: Path, db_url: str
) -> None:
    async with demo_client(tmp_path, db_url) as client:
        graph = (await client.get("/workbench/api/flows")).json()
    types = {s["name"]: s["type"] for s in graph["steps"]}
    assert types["SendMessage"] == "api"
    assert types["ProcessMessage"] == "event"
    assert types["NightlyReport"] == "cron"
    assert types["NotifyModerators"] == "noop"
    messages = next(f for f in graph["flows"] if f["name"] == "messages")
    # AnalyzeSentiment carries no label but is wired to SendMessage by message.sent
    assert "AnalyzeSentiment" in messages["steps"]
    assert messages["wired_in"] == ["AnalyzeSentiment", "NotifyModerators"]
    assert "ChargeCard" not in messages["steps"]
    assert {"from": "SendMessage", "to": "AnalyzeSentiment", "topic": "message.sent"} in graph[
        "edges"
    ]
    send = next(s for s in graph["steps"] if s["name"] == "SendMessage")
    assert send["file"].endswith("messages/send_message_step.py")
    assert send["config"]["body"]["properties"]["text"]["maxLength"] == 2000
    assert send["config"]["responses"]["202"]["required"] == ["id"]
    nightly = next(s for s in graph["steps"] if s["name"] == "NightlyReport")
    assert nightly["config"]["schedule"] == "0 3 * * *"
    assert nightly["config"]["timezone"] == "Europe/Paris"


# -- logs -----------------------------------------------------------------------------------------


async def test_logs_carry_step_and_trace_and_filter_by_level_step_trace_and_text(
    tmp_path: Path, db_url: str
) -> None:
    async with demo_client(tmp_path, db_url) as client:
        await post_message(client, "hello logs", "trace-logs-0001")
        await trace_when(client, "trace-logs-0001", {"ProcessMessage", "AnalyzeSentiment"})
        by_trace = (
            await client.get("/workbench/api/logs", params={"trace_id": "trace-logs-0001"})
        ).json()["logs"]
        by_step = (await client.get("/workbench/api/logs", params={"step": "SendMessage"})).json()
        by_text = (await client.get("/workbench/api/logs", params={"q": "HELLO LOGS"})).json()
        errors = (await client.get("/workbench/api/logs", params={"level": "error"})).json()
    messages = {(r["step"], r["message"]) for r in by_trace}
    assert ("SendMessage", "Sending message") in messages
    assert ("ProcessMessage", "Processing message") in messages
    assert ("AnalyzeSentiment", "Sentiment") in messages
    sending = next(r for r in by_trace if r["message"] == "Sending message")
    assert sending["level"] == "info"
    assert sending["fields"]["text"] == "hello logs"
    assert {r["step"] for r in by_step["logs"]} == {"SendMessage"}
    assert [r["message"] for r in by_text["logs"]] == ["Sending message"]
    assert errors["logs"] == []
    assert by_step["capacity"] == 10_000


async def test_the_log_buffer_keeps_the_newest_records_up_to_its_setting(
    tmp_path: Path, db_url: str
) -> None:
    async with demo_client(tmp_path, db_url, workbench_log_buffer=100) as client:
        for n in range(120):  # 120 "Sending message" lines alone overflow the buffer
            await post_message(client, f"message {n}", f"trace-buffer-{n:04d}")
        logs = (await client.get("/workbench/api/logs", params={"limit": 1000})).json()
    assert logs["capacity"] == 100
    assert len(logs["logs"]) == 100
    seqs = [r["seq"] for r in logs["logs"]]
    assert seqs == sorted(seqs) and seqs[-1] == logs["last_seq"]
    assert seqs[0] == logs["last_seq"] - 99  # the oldest ones went first
    assert "message 119" in str(logs["logs"])


async def test_secrets_in_log_fields_are_masked(tmp_path: Path, db_url: str) -> None:
    async with demo_client(tmp_path, db_url) as client:
        from app.runtime import get_logger

        get_logger(step="Login").info("signing in", password="hunter2", api_key="k-123", user="ann")
        logs = (await client.get("/workbench/api/logs", params={"step": "Login"})).json()["logs"]
    assert logs[0]["fields"] == {"password": "***", "api_key": "***", "user": "ann"}


# -- traces ---------------------------------------------------------------------------------------


async def test_a_trace_lists_the_api_step_its_downstream_steps_events_and_logs(
    tmp_path: Path, any_db_url: str
) -> None:
    async with demo_client(tmp_path, any_db_url) as client:
        await post_message(client, "I love it", "trace-e2e-00001")
        trace = await trace_when(
            client, "trace-e2e-00001", {"SendMessage", "ProcessMessage", "ArchiveAnalysis"}
        )
        # once the recorder flushed, the same answer comes from the database
        await eventually(lambda: _stored_runs(client, "trace-e2e-00001", 4))
        stored = (await client.get("/workbench/api/traces/trace-e2e-00001")).json()
        listing = (await client.get("/workbench/api/traces")).json()["traces"]
    assert trace["root"]["step"] == "SendMessage"
    assert trace["root"]["detail"] == "POST /messages"
    assert trace["steps"][0] == "SendMessage"
    assert set(trace["steps"]) == {
        "SendMessage",
        "ProcessMessage",
        "AnalyzeSentiment",
        "ArchiveAnalysis",
    }
    for run in stored["runs"]:
        assert run["outcome"] == "ok"
        assert run["attempt"] == 1
        assert run["duration_ms"] >= 0
        assert run["offset_ms"] >= 0
    kinds = {r["step"]: r["kind"] for r in stored["runs"]}
    assert kinds["SendMessage"] == "api" and kinds["ProcessMessage"] == "event"
    topics = {(e["topic"], e["emitted_by"]) for e in stored["events"]}
    assert topics == {("message.sent", "SendMessage"), ("message.analyzed", "AnalyzeSentiment")}
    sent = next(e for e in stored["events"] if e["topic"] == "message.sent")
    assert sent["data"] == {"text": "I love it", "room": "general"}
    assert {d["step"] for d in stored["deliveries"]} == {
        "ProcessMessage",
        "AnalyzeSentiment",
        "ArchiveAnalysis",
    }
    assert "Sending message" in [r["message"] for r in stored["logs"]]
    row = next(t for t in listing if t["trace_id"] == "trace-e2e-00001")
    assert row["root"] == {
        "step": "SendMessage",
        "kind": "api",
        "detail": "POST /messages",
        "outcome": "ok",
    }
    assert row["runs"] == 4 and row["errors"] == 0


async def _stored_runs(client: httpx.AsyncClient, trace_id: str, n: int) -> bool:
    from sqlalchemy import func, select

    from app.runtime._schema import step_runs

    async with runtime_of(client).read_connection() as conn:
        count = (
            await conn.execute(
                select(func.count()).select_from(step_runs).where(step_runs.c.trace_id == trace_id)
            )
        ).scalar_one()
    return int(count) >= n


async def test_a_w3c_traceparent_names_the_trace_through_every_event(
    tmp_path: Path, db_url: str
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with demo_client(tmp_path, db_url) as client:
        reply = await client.post(
            "/messages",
            json={"text": "traced"},
            headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
        )
        assert reply.headers["x-trace-id"] == trace_id
        trace = await trace_when(client, trace_id, {"SendMessage", "ArchiveAnalysis"})
    assert {d["step"] for d in trace["deliveries"]} >= {"ProcessMessage", "AnalyzeSentiment"}


async def test_traces_can_be_filtered_by_step_and_failures(tmp_path: Path, db_url: str) -> None:
    async with demo_client(tmp_path, db_url) as client:
        await post_message(client, "fine", "trace-filter-ok")
        reply = await client.post(
            "/payments/o-1", headers={**ADMIN, "X-Trace-Id": "trace-filter-bad"}
        )
        assert reply.status_code == 202

        async def dead() -> bool:
            return bool((await client.get("/workbench/api/dlq")).json()["dead_letters"])

        await eventually(dead)
        await trace_when(client, "trace-filter-ok", {"ArchiveAnalysis"})
        failing = (await client.get("/workbench/api/traces", params={"errors": True})).json()
        charge = (await client.get("/workbench/api/traces", params={"step": "ChargeCard"})).json()
        missing = await client.get("/workbench/api/traces/no-such-trace-id")
    assert [t["trace_id"] for t in failing["traces"]] == ["trace-filter-bad"]
    assert failing["traces"][0]["errors"] == 2
    assert [t["trace_id"] for t in charge["traces"]] == ["trace-filter-bad"]
    assert missing.status_code == 404
    assert missing.json()["code"] == "not_found"
    assert set(missing.json()) == {"error", "code", "details", "trace_id"}


# -- state ----------------------------------------------------------------------------------------


async def test_state_is_browsed_edited_and_deleted(tmp_path: Path, any_db_url: str) -> None:
    async with demo_client(tmp_path, any_db_url) as client:
        await post_message(client, "state me", "trace-state-0001")
        await trace_when(client, "trace-state-0001", {"ProcessMessage"})
        groups = (await client.get("/workbench/api/state")).json()["groups"]
        rooms = (await client.get("/workbench/api/state", params={"group": "rooms"})).json()

        edit = await client.put(
            "/workbench/api/state",
            params={"group": "rooms", "key": "general"},
            json={"value": {"count": 41, "tags": ["a", "b"]}},
            headers=WRITE,
        )
        value = await client.get(
            "/workbench/api/state/value", params={"group": "rooms", "key": "general"}
        )
        no_header = await client.delete(
            "/workbench/api/state", params={"group": "rooms", "key": "general"}
        )
        no_key = await client.delete(
            "/workbench/api/state", params={"group": "rooms"}, headers=WRITE
        )
        deleted = await client.delete(
            "/workbench/api/state", params={"group": "rooms", "key": "general"}, headers=WRITE
        )
        gone = await client.get(
            "/workbench/api/state/value", params={"group": "rooms", "key": "general"}
        )
        cleared = await client.delete(
            "/workbench/api/state", params={"group": "messages", "all": True}, headers=WRITE
        )
        after = (await client.get("/workbench/api/state")).json()["groups"]
        # the handler sees what the Workbench wrote
        await client.put(
            "/workbench/api/state",
            params={"group": "rooms", "key": "general"},
            json={"value": 10},
            headers=WRITE,
        )
        await post_message(client, "again", "trace-state-0002")
        await trace_when(client, "trace-state-0002", {"ProcessMessage"})
        counted = (
            await client.get(
                "/workbench/api/state/value", params={"group": "rooms", "key": "general"}
            )
        ).json()
    assert {g["group"]: g["keys"] for g in groups}.items() >= {"rooms": 1, "messages": 1}.items()
    assert rooms["items"][0]["key"] == "general" and rooms["items"][0]["value"] == 1
    assert edit.status_code == 200
    assert value.json()["value"] == {"count": 41, "tags": ["a", "b"]}
    assert no_header.status_code == 403
    assert no_header.json()["code"] == "workbench_header_missing"
    assert no_key.status_code == 400
    assert deleted.status_code == 204
    assert gone.status_code == 404
    assert cleared.status_code == 204
    assert "messages" not in {g["group"] for g in after}
    assert counted["value"] == 11


# -- streams --------------------------------------------------------------------------------------


async def test_streams_list_their_groups_and_items(tmp_path: Path, db_url: str) -> None:
    async with demo_client(tmp_path, db_url) as client:
        now = time.time()
        async with runtime_of(client).engine.begin() as conn:
            await conn.execute(
                insert(stream_items),
                [
                    {
                        "stream": "chat",
                        "group_id": room,
                        "id": f"m{n}",
                        "data": f'{{"text": "hi {n}"}}',
                        "version": 1,
                        "updated_at": now + n,
                    }
                    for n, room in enumerate(["room-1", "room-1", "room-2"])
                ]
                # a deleted item left as a tombstone is not shown
                + [
                    {
                        "stream": "chat",
                        "group_id": "room-1",
                        "id": "gone",
                        "data": "null",
                        "version": 2,
                        "updated_at": now + 5,
                    }
                ],
            )
        streams = (await client.get("/workbench/api/streams")).json()["streams"]
        groups = (await client.get("/workbench/api/streams", params={"stream": "chat"})).json()
        items = (
            await client.get("/workbench/api/streams", params={"stream": "chat", "group": "room-1"})
        ).json()
    assert streams == [
        {"name": "chat", "declared": False, "groups": 2, "items": 3, "updated_at": now + 2}
    ]
    assert [(g["group"], g["items"]) for g in groups["groups"]] == [("room-2", 1), ("room-1", 2)]
    assert [(i["id"], i["data"]) for i in items["items"]] == [
        ("m1", {"text": "hi 1"}),
        ("m0", {"text": "hi 0"}),
    ]


# -- dead letters ---------------------------------------------------------------------------------


async def _dead_letters(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    letters: list[dict[str, Any]] = (await client.get("/workbench/api/dlq")).json()["dead_letters"]
    return letters


async def test_dead_letters_show_every_error_and_replay_one_or_all(
    tmp_path: Path, any_db_url: str
) -> None:
    async with demo_client(tmp_path, any_db_url) as client:
        for order in ("o-1", "o-2"):
            reply = await client.post(f"/payments/{order}", headers=ADMIN)
            assert reply.status_code == 202
        letters = await eventually(lambda: _has(_dead_letters(client), 2))
        first = next(d for d in letters if d["data"]["order_id"] == "o-1")
        not_dead = await client.post("/workbench/api/dlq/999999/replay", headers=WRITE)
        # fix the cause, then replay one
        await client.put(
            "/workbench/api/state",
            params={"group": "payments", "key": "gateway_up"},
            json={"value": True},
            headers=WRITE,
        )
        one = await client.post(f"/workbench/api/dlq/{first['id']}/replay", headers=WRITE)
        await eventually(lambda: _paid(client, "o-1"))
        remaining = await _dead_letters(client)
        everything = await client.post(
            "/workbench/api/dlq/replay", json={"all": True}, headers=WRITE
        )
        await eventually(lambda: _paid(client, "o-2"))
        bad_body = await client.post("/workbench/api/dlq/replay", json={}, headers=WRITE)
        final = await _dead_letters(client)
    assert first["step"] == "ChargeCard" and first["topic"] == "payment.requested"
    assert first["data"] == {"order_id": "o-1", "amount": 100}
    assert [e["attempt"] for e in first["errors"]] == [1, 2]
    assert "card gateway unreachable for o-1" in first["errors"][0]["error"]
    assert not_dead.status_code == 404
    assert one.json() == {"replayed": [first["id"]]}
    assert [d["data"]["order_id"] for d in remaining] == ["o-2"]
    assert everything.json()["replayed"] == [remaining[0]["id"]]
    assert bad_body.status_code == 400
    assert final == []


async def _has(letters_coro: Any, n: int) -> list[dict[str, Any]] | None:
    letters: list[dict[str, Any]] = await letters_coro
    return letters if len(letters) >= n else None


async def _paid(client: httpx.AsyncClient, order: str) -> bool:
    reply = await client.get(
        "/workbench/api/state/value", params={"group": "payments", "key": order}
    )
    return reply.status_code == 200 and reply.json()["value"] == "paid"


# -- metrics --------------------------------------------------------------------------------------


async def test_metrics_per_step_and_the_queue(tmp_path: Path, any_db_url: str) -> None:
    async with demo_client(tmp_path, any_db_url) as client:
        for n in range(3):
            await post_message(client, f"m{n}", f"trace-metrics-{n:03d}")
        await client.post("/payments/o-9", headers=ADMIN)
        await eventually(lambda: _has(_dead_letters(client), 1))

        async def counted() -> dict[str, Any] | None:
            body: dict[str, Any] = (await client.get("/workbench/api/metrics")).json()
            steps = {s["step"]: s for s in body["steps"]}
            done = steps["ArchiveAnalysis"]["count"] == 3 and steps["ChargeCard"]["count"] == 2
            return body if done else None

        body = await eventually(counted)
        text = (await client.get("/metrics")).text
    steps = {s["step"]: s for s in body["steps"]}
    send = steps["SendMessage"]
    assert send["count"] == 3 and send["errors"] == 0 and send["retries"] == 0
    assert 0 <= send["p50_ms"] <= send["p99_ms"]
    charge = steps["ChargeCard"]
    assert charge["errors"] == 2 and charge["retries"] == 1
    assert charge["queue"]["dead"] == 1
    assert steps["NightlyReport"]["count"] == 0 and steps["NightlyReport"]["p50_ms"] is None
    assert body["window_seconds"] == 300
    assert body["queue"]["totals"]["dead"] == 1
    assert 'stepwise_step_runs_total{step="SendMessage",kind="api",outcome="ok"} 3' in text
    assert 'stepwise_step_runs_total{step="ChargeCard",kind="event",outcome="dead"} 1' in text
    assert 'stepwise_step_retries_total{step="ChargeCard"} 1' in text
    assert 'stepwise_step_duration_seconds_count{step="SendMessage"} 3' in text
    assert 'stepwise_step_duration_seconds_bucket{step="SendMessage",le="+Inf"} 3' in text
    assert 'stepwise_window_runs{step="ProcessMessage"} 3' in text
    assert 'stepwise_queue_deliveries{step="ChargeCard",status="dead"} 1' in text
    assert "# TYPE stepwise_step_duration_seconds histogram" in text


async def test_queue_depth_and_the_oldest_pending_delivery(tmp_path: Path, db_url: str) -> None:
    # role "api": nobody works the queue, so what is emitted stays pending
    async with demo_client(tmp_path, db_url, role="api") as client:
        await post_message(client, "waiting", "trace-queue-0001")
        body = (await client.get("/workbench/api/metrics", params={"window": 60})).json()
        text = (await client.get("/metrics")).text
    queue = body["queue"]
    assert queue["depth"] == 2
    assert queue["by_step"]["ProcessMessage"]["pending"] == 1
    assert queue["by_step"]["AnalyzeSentiment"]["due"] == 1
    assert queue["oldest_pending"]["step"] in {"ProcessMessage", "AnalyzeSentiment"}
    assert queue["oldest_pending"]["waiting_seconds"] >= 0
    assert body["window_seconds"] == 60
    assert "stepwise_queue_depth 2" in text


# -- cron -----------------------------------------------------------------------------------------


async def test_cron_shows_schedule_last_and_next_firing_and_fires_now(
    tmp_path: Path, any_db_url: str
) -> None:
    async with demo_client(tmp_path, any_db_url) as client:
        before = (await client.get("/workbench/api/cron")).json()["cron"]
        fired = await client.post("/workbench/api/cron/NightlyReport/fire", headers=WRITE)
        trace_id = fired.json()["trace_id"]
        trace = await trace_when(client, trace_id, {"NightlyReport"})

        async def last_run() -> dict[str, Any] | None:
            entry: dict[str, Any] = (await client.get("/workbench/api/cron")).json()["cron"][0]
            return entry if entry["last_run"] is not None else None

        after = await eventually(last_run)
        unknown = await client.post("/workbench/api/cron/SendMessage/fire", headers=WRITE)
    [nightly] = before
    assert nightly["name"] == "NightlyReport"
    assert nightly["schedule"] == "0 3 * * *" and nightly["timezone"] == "Europe/Paris"
    assert nightly["next_fire_at"] > time.time()
    assert nightly["last_run"] is None
    assert fired.status_code == 202
    assert trace["runs"][0]["kind"] == "cron"
    assert after["last_run"]["outcome"] == "ok"
    assert after["last_fire_at"] is not None
    assert unknown.status_code == 404


# -- endpoints ------------------------------------------------------------------------------------


async def test_endpoints_list_every_api_step_with_its_schemas(tmp_path: Path, db_url: str) -> None:
    async with demo_client(tmp_path, db_url) as client:
        endpoints = (await client.get("/workbench/api/endpoints")).json()["endpoints"]
    by_name = {e["name"]: e for e in endpoints}
    send = by_name["SendMessage"]
    assert (send["method"], send["path"], send["auth"]) == ("POST", "/messages", "public")
    assert send["body"]["required"] == ["text"]
    assert send["emits"] == ["message.sent"]
    assert by_name["RequestPayment"]["path_params"] == ["order_id"]
    assert by_name["RequestPayment"]["auth"] == "user"
    assert "ProcessMessage" not in by_name


# -- the page -------------------------------------------------------------------------------------


async def test_the_page_and_its_assets_are_served_without_any_outside_url(
    tmp_path: Path, db_url: str
) -> None:
    async with demo_client(tmp_path, db_url) as client:
        page = await client.get("/workbench")
        assets = [
            await client.get(f"/workbench/assets/{name}")
            for name in ("workbench.js", "workbench.css")
        ]
        cached = await client.get(
            "/workbench/assets/workbench.js", headers={"If-None-Match": assets[0].headers["etag"]}
        )
        missing = await client.get("/workbench/assets/../settings.py")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for reply in [page, *assets]:
        assert reply.status_code == 200
        assert "http://" not in reply.text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in reply.text
    assert cached.status_code == 304
    assert missing.status_code == 404


async def test_without_the_workbench_setting_nothing_is_mounted(
    tmp_path: Path, db_url: str
) -> None:
    async with demo_client(tmp_path, db_url, workbench_enabled=False) as client:
        assert (await client.get("/workbench")).status_code == 404
        assert (await client.get("/workbench/api/flows")).status_code == 404
        assert (await client.get("/metrics")).status_code == 404
