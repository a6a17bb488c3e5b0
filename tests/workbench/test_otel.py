"""OpenTelemetry: step runs exported as spans of the request's trace (W3C trace-id kept)."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from app.main import build_runtime
from app.workbench import install_otel
from app.workbench.otel import otel_trace_id
from tests.support import eventually
from tests.workbench.demo import demo_app, demo_settings, live_server

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_step_runs_become_spans_of_the_callers_trace(tmp_path: Path, db_url: str) -> None:
    import httpx

    exporter = InMemorySpanExporter()
    app = demo_app(demo_settings(tmp_path, db_url))
    provider = install_otel(app.state.runtime, app.state.settings, exporter=exporter)
    assert provider is not None
    async with live_server(app) as base, httpx.AsyncClient(base_url=base) as client:
        await client.post(
            "/messages",
            json={"text": "spans"},
            headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"},
        )
        await client.post("/payments/o-1", headers={"X-Test-User": "u:admin"})

        async def exported() -> list[object]:
            spans = list(exporter.get_finished_spans())
            names = {s.name for s in spans}
            want = {"api SendMessage", "event ArchiveAnalysis", "event ChargeCard"}
            return spans if want <= names and len(spans) >= 7 else []

        spans = await eventually(exported)
    provider.shutdown()
    ours = [s for s in spans if s.context.trace_id == int(TRACE, 16)]  # type: ignore[attr-defined]
    assert {s.name for s in ours} == {  # type: ignore[attr-defined]
        "api SendMessage",
        "event ProcessMessage",
        "event AnalyzeSentiment",
        "event ArchiveAnalysis",
    }
    api = next(s for s in ours if s.name == "api SendMessage")  # type: ignore[attr-defined]
    assert api.kind == SpanKind.SERVER
    assert api.attributes["stepwise.detail"] == "POST /messages"
    assert api.end_time >= api.start_time
    assert api.resource.attributes["service.name"] == "stepwise"
    failed = [s for s in spans if s.name == "event ChargeCard"]  # type: ignore[attr-defined]
    assert [s.status.status_code for s in failed] == [StatusCode.ERROR, StatusCode.ERROR]
    assert "card gateway unreachable" in (failed[0].status.description or "")
    assert failed[1].attributes["stepwise.outcome"] == "dead"


def test_trace_ids_that_are_not_w3c_hex_map_to_a_stable_128_bit_id() -> None:
    assert otel_trace_id(TRACE) == int(TRACE, 16)
    assert otel_trace_id("trace-abc-123") == otel_trace_id("trace-abc-123")
    assert 0 < otel_trace_id("trace-abc-123") < 2**128


def test_an_otlp_endpoint_turns_the_export_on(tmp_path: Path, db_url: str) -> None:
    settings = demo_settings(tmp_path, db_url, otel_exporter_otlp_endpoint="http://127.0.0.1:4318")
    runtime = build_runtime(settings)
    provider = install_otel(runtime, settings)
    assert provider is not None
    processor = provider._active_span_processor._span_processors[0]
    exporter = processor._batch_processor._exporter  # type: ignore[attr-defined]
    assert type(exporter).__name__ == "OTLPSpanExporter"
    assert exporter._endpoint == "http://127.0.0.1:4318/v1/traces"
    provider.shutdown()
    assert (
        install_otel(
            build_runtime(demo_settings(tmp_path, db_url)),
            settings.model_copy(update={"otel_exporter_otlp_endpoint": None}),
        )
        is None
    )


@pytest.mark.parametrize("value", ["", "   "])
def test_a_blank_endpoint_means_no_export(tmp_path: Path, db_url: str, value: str) -> None:
    settings = demo_settings(tmp_path, db_url, otel_exporter_otlp_endpoint=value)
    assert settings.otel_exporter_otlp_endpoint is None
