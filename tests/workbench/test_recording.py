"""Recording never gets in a step's way."""

from __future__ import annotations

from pathlib import Path

from app.runtime._recorder import StepRun
from app.workbench.runs import RunCounters, safe_listener
from tests.workbench.demo import demo_client


async def test_a_failing_run_listener_is_logged_and_the_step_still_succeeds(
    tmp_path: Path, db_url: str
) -> None:
    def broken(run: StepRun) -> None:
        raise RuntimeError("exporter down")

    async with demo_client(tmp_path, db_url) as client:
        client.app.state.runtime.recorder.add_listener(safe_listener(broken))  # type: ignore[attr-defined]
        reply = await client.post("/messages", json={"text": "still works"})
        logs = (await client.get("/workbench/api/logs", params={"q": "exporter down"})).json()
    assert reply.status_code == 202
    assert [r["message"] for r in logs["logs"]][:1] == ["a step-run listener failed"]


def test_counters_count_outcomes_retries_and_duration_buckets() -> None:
    counters = RunCounters()
    for attempt, outcome, ms in [(1, "error", 3.0), (2, "ok", 40.0), (1, "ok", 0.5)]:
        counters(StepRun("t", "Charge", "event", attempt, 0.0, ms, outcome))
    snap = counters.snapshot()["Charge"]
    assert snap["outcomes"] == {("event", "error"): 1, ("event", "ok"): 2}
    assert snap["retries"] == 1 and snap["count"] == 3
    assert snap["buckets"][0] == 1  # 0.5 ms <= 1 ms
    assert sum(snap["buckets"]) == 3
    assert abs(snap["duration_sum"] - 0.0435) < 1e-9
