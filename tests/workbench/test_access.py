"""In production the Workbench, its API and /metrics are for admins (and a metrics token)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workbench.demo import demo_client

SECRET = "x" * 48
READS = [
    "/workbench",
    "/workbench/assets/workbench.js",
    "/workbench/api/flows",
    "/workbench/api/logs",
    "/workbench/api/logs/stream?max_seconds=0.1",
    "/workbench/api/traces",
    "/workbench/api/traces/abcdefgh1234",
    "/workbench/api/state",
    "/workbench/api/state/value?group=g&key=k",
    "/workbench/api/streams",
    "/workbench/api/dlq",
    "/workbench/api/metrics",
    "/workbench/api/cron",
    "/workbench/api/endpoints",
    "/metrics",
]
WRITES = [
    ("PUT", "/workbench/api/state?group=g&key=k", {"value": 1}),
    ("DELETE", "/workbench/api/state?group=g&key=k", None),
    ("POST", "/workbench/api/dlq/replay", {"all": True}),
    ("POST", "/workbench/api/dlq/1/replay", None),
    ("POST", "/workbench/api/cron/NightlyReport/fire", None),
]


@pytest.mark.parametrize("path", READS)
async def test_in_production_reads_need_an_admin(tmp_path: Path, db_url: str, path: str) -> None:
    async with demo_client(tmp_path, db_url, env="production", jwt_secret=SECRET) as client:
        anonymous = await client.get(path)
        user = await client.get(path, headers={"X-Test-User": "u1:user"})
        admin = await client.get(path, headers={"X-Test-User": "u2:admin"})
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "unauthorized"
    assert set(anonymous.json()) == {"error", "code", "details", "trace_id"}
    assert user.status_code == 403
    assert user.json()["code"] == "forbidden"
    assert admin.status_code in (200, 404)  # 404: the trace / key asked for does not exist
    if admin.status_code == 404:
        assert admin.json()["code"] == "not_found"


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
async def test_in_production_writes_need_an_admin_and_the_workbench_header(
    tmp_path: Path, db_url: str, method: str, path: str, body: object
) -> None:
    async with demo_client(tmp_path, db_url, env="production", jwt_secret=SECRET) as client:
        header = {"X-Stepwise-Workbench": "1"}
        anonymous = await client.request(method, path, json=body, headers=header)
        user = await client.request(
            method, path, json=body, headers={**header, "X-Test-User": "u1:user"}
        )
        no_header = await client.request(
            method, path, json=body, headers={"X-Test-User": "u2:admin"}
        )
        admin = await client.request(
            method, path, json=body, headers={**header, "X-Test-User": "u2:admin"}
        )
    assert anonymous.status_code == 401
    assert user.status_code == 403
    assert no_header.status_code == 403
    assert no_header.json()["code"] == "workbench_header_missing"
    assert admin.status_code in (200, 202, 204, 404)


async def test_in_development_the_workbench_is_public(tmp_path: Path, db_url: str) -> None:
    async with demo_client(tmp_path, db_url, env="development") as client:
        for path in READS:
            reply = await client.get(path)
            assert reply.status_code in (200, 404), path


async def test_a_metrics_token_lets_a_scraper_in_without_a_user(
    tmp_path: Path, db_url: str
) -> None:
    token = "scrape-" + "s" * 30
    async with demo_client(
        tmp_path, db_url, env="production", jwt_secret=SECRET, metrics_token=token
    ) as client:
        scraper = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope-nope-nope"})
        elsewhere = await client.get(
            "/workbench/api/flows", headers={"Authorization": f"Bearer {token}"}
        )
    assert scraper.status_code == 200
    assert scraper.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# TYPE stepwise_queue_depth gauge" in scraper.text
    assert wrong.status_code == 401
    assert elsewhere.status_code == 401  # the token opens /metrics only
