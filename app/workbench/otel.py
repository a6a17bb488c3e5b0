"""Optional OpenTelemetry export: every step run becomes a span of its trace (the trace id is the
request's, so spans line up with a caller's W3C `traceparent`)."""

from __future__ import annotations

import hashlib
import re
import threading
from typing import TYPE_CHECKING, Any

from app.runtime._recorder import StepRun

from .runs import safe_listener

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from app.runtime import Runtime
    from app.settings import Settings

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_SPAN_KIND = {"api": "SERVER", "event": "CONSUMER", "cron": "INTERNAL"}


def otel_trace_id(trace_id: str) -> int:
    """Our trace id as a 128-bit OpenTelemetry trace id: itself when it is W3C hex, else a hash."""
    if _HEX32.match(trace_id) and trace_id != "0" * 32:
        return int(trace_id, 16)
    return int.from_bytes(hashlib.sha256(trace_id.encode()).digest()[:16], "big") or 1


class StepRunSpans:
    """A recorder listener turning each `StepRun` into a finished span."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        self._trace = trace
        self._status = Status
        self._error = StatusCode.ERROR
        self.provider = provider
        self.tracer = provider.get_tracer("stepwise")

    def __call__(self, run: StepRun) -> None:
        ids: Any = self.provider.id_generator  # a ChosenTraceIds (see install_otel)
        ids.chosen.value = otel_trace_id(run.trace_id)
        start = int(run.started_at * 1e9)
        attributes: dict[str, Any] = {
            "stepwise.step": run.step,
            "stepwise.kind": run.kind,
            "stepwise.attempt": run.attempt,
            "stepwise.outcome": run.outcome,
            "stepwise.trace_id": run.trace_id,
        }
        if run.delivery_id is not None:
            attributes["stepwise.delivery_id"] = run.delivery_id
        if run.detail:
            attributes["stepwise.detail"] = run.detail
        try:
            span = self.tracer.start_span(
                f"{run.kind} {run.step}",
                kind=getattr(self._trace.SpanKind, _SPAN_KIND.get(run.kind, "INTERNAL")),
                start_time=start,
                attributes=attributes,
            )
            if run.outcome != "ok":
                span.set_status(self._status(self._error, run.error or run.outcome))
            span.end(end_time=start + int(run.duration_ms * 1e6))
        finally:
            ids.chosen.value = None


def _chosen_trace_ids() -> Any:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class ChosenTraceIds(RandomIdGenerator):
        """Root spans take the trace id the listener chose for them (per thread)."""

        def __init__(self) -> None:
            self.chosen = threading.local()

        def generate_trace_id(self) -> int:
            value = getattr(self.chosen, "value", None)
            return value if value is not None else super().generate_trace_id()

    return ChosenTraceIds()


def install_otel(
    runtime: Runtime, settings: Settings, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Export step runs as spans to `OTEL_EXPORTER_OTLP_ENDPOINT` (or to `exporter`, for tests).

    Returns the provider (shut it down to flush), or None when nothing is configured.
    """
    if exporter is None and not settings.otel_exporter_otlp_endpoint:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": settings.otel_service_name, "service.version": settings.app_version}
        ),
        id_generator=_chosen_trace_ids(),
        shutdown_on_exit=True,
    )
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise RuntimeError(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed: "
                "run `uv sync --extra otlp` (or unset OTEL_EXPORTER_OTLP_ENDPOINT)"
            ) from exc
        endpoint = settings.otel_exporter_otlp_endpoint or ""
        if not endpoint.rstrip("/").endswith("/v1/traces"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    runtime.recorder.add_listener(safe_listener(StepRunSpans(provider)))
    return provider
