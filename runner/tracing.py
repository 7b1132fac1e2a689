"""Traces: one OpenTelemetry trace from an API request through the jobs it enqueues to their provider calls.

Off unless `OTLP_ENDPOINT` (or the standard `OTEL_EXPORTER_OTLP_ENDPOINT`) is set. Then `setup_tracing`, called
once at each entry point (the API and each worker; the supervisor makes no spans), installs an SDK tracer
provider exporting OTLP over HTTP, installs the asyncpg, Redis and httpx instrumentations, and turns tracing
on. Off, a hot path (an enqueue, a job's run) pays one boolean check: no span, no context in the payload,
nothing of the SDK or the instrumentations imported.

    POST /stories/                        SERVER    FastAPI's own span (see api.main: FastAPI(telemetry=...))
      enqueue story_task.generate         PRODUCER  around the push; its context goes into the payload
        run story_task.generate           CONSUMER  one per attempt; its parent comes from the payload
          SELECT ... / EVALSHA / POST     CLIENT    asyncpg, Redis, httpx (the provider calls)
          enqueue media_task.generate     PRODUCER  one per scene
            run media_task.generate       CONSUMER
              EVALSHA / POST ...          CLIENT

The context travels as W3C `traceparent` / `tracestate` in the job envelope's string metadata (`m`, see
runner.envelope), next to `parent`. Spans go to the global tracer provider, looked up when a span starts, so
tests install an in-memory one once per session (`tracer_provider`, then `enable` / `disable` per test).

A Redis, Postgres or HTTP call made outside any trace (the claim loop, lease renewals, the sweeper, the
batched status writes) starts no trace of its own: the sampler drops root CLIENT spans, which would each be a
trace of one span.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from runner.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler

__all__ = [
    "disable",
    "enable",
    "enabled",
    "enqueue_span",
    "extract",
    "inject",
    "record_error",
    "run_span",
    "set_outcome",
    "setup_tracing",
    "tracer_provider",
]

log = structlog.get_logger("runner.tracing")

_on = False  # read on every enqueue and job run: the one check tracing costs when it is off
_OFF: AbstractContextManager[None] = nullcontext()
_W3C = TraceContextTextMapPropagator()  # traceparent / tracestate only, whatever OTEL_PROPAGATORS says
_tracer = trace.get_tracer("runner")  # a proxy: it uses the global provider once one is set
_ERROR_OUTCOMES = frozenset({"failed", "retrying"})


def setup_tracing(settings: Settings, service_name: str) -> bool:
    """Once per process, at its entry point: with an OTLP endpoint set (OTLP_ENDPOINT, else the standard
    OTEL_EXPORTER_OTLP_ENDPOINT; a base URL such as http://collector:4318), export spans there (batched, from
    a background thread) and turn tracing on; without one, do nothing. True if tracing is on.

    `OTEL_SERVICE_NAME` overrides `service_name`; the exporter also reads the standard `OTEL_EXPORTER_OTLP_*`
    headers, timeout, compression and certificate variables."""
    base = settings.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not base:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    endpoint = base.rstrip("/") + "/v1/traces"  # OTLP/HTTP: the base URL plus the signal's path
    provider = tracer_provider(os.environ.get("OTEL_SERVICE_NAME") or service_name)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    enable()
    log.info("tracing_on", endpoint=endpoint, service=provider.resource.attributes.get("service.name"))
    return True


def tracer_provider(service_name: str) -> TracerProvider:
    """An SDK tracer provider with this runner's sampler and resource, and no exporter yet (add a processor)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    return TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}), sampler=_sampler())


def enable() -> None:
    """Turn tracing on in this process: spans from now on, through the global tracer provider (set one first,
    or they go nowhere), and the asyncpg, Redis and httpx instrumentations installed."""
    global _on
    if _on:
        return
    for instrumentor in _instrumentors():
        instrumentor.instrument()
    _on = True


def disable() -> None:
    """Turn tracing off again (tests): no spans, the instrumentations removed. The global provider stays."""
    global _on
    if not _on:
        return
    _on = False
    for instrumentor in _instrumentors():
        instrumentor.uninstrument()


def enabled() -> bool:
    return _on


def inject() -> dict[str, str]:
    """The current span's W3C trace context (`traceparent`, and `tracestate` if it has one), for a job's
    metadata; empty when tracing is off or no span is current."""
    carrier: dict[str, str] = {}
    if _on:
        _W3C.inject(carrier)
    return carrier


def extract(meta: Mapping[str, str]) -> Context:
    """The trace context a job's metadata carries (an empty context if it carries none)."""
    return _W3C.extract(meta)


def enqueue_span(job_name: str, *, job_id: str, queue: str) -> AbstractContextManager[Any]:
    """The span around putting a job on its queue (current while it lasts, so `inject` carries it)."""
    if not _on:
        return _OFF
    return _tracer.start_as_current_span(
        f"enqueue {job_name}", kind=SpanKind.PRODUCER, attributes={"job.id": job_id, "job.name": job_name,
                                                                  "job.queue": queue},
    )  # fmt: skip


def run_span(
    job_name: str, *, job_id: str, attempt: int, queue: str, meta: Mapping[str, str] | None
) -> AbstractContextManager[Any]:
    """The span of one attempt of a job, a child of the span that enqueued it (from the payload's `meta`)."""
    if not _on:
        return _OFF
    return _tracer.start_as_current_span(
        f"run {job_name}", context=extract(meta or {}), kind=SpanKind.CONSUMER,
        attributes={"job.id": job_id, "job.name": job_name, "job.attempt": attempt, "job.queue": queue},
    )  # fmt: skip


def set_outcome(outcome: str | None, error: str | None = None) -> None:
    """Record how the current attempt ended on its span; an attempt that failed (or will be retried) is an
    error, with the reason."""
    if not _on or outcome is None:
        return
    span = trace.get_current_span()
    span.set_attribute("job.outcome", outcome)
    if outcome in _ERROR_OUTCOMES:
        span.set_status(StatusCode.ERROR, error)


def record_error(exc: BaseException) -> None:
    """Record the error that ended the current attempt on its span (type, message, traceback)."""
    if _on:
        trace.get_current_span().record_exception(exc)


def _sampler() -> Sampler:
    """Children follow their parent. A root span is recorded unless it is a CLIENT call (Redis, Postgres,
    HTTP) made outside any trace: traces start at requests, enqueues and job runs."""
    from opentelemetry.sdk.trace.sampling import Decision, ParentBased, Sampler, SamplingResult

    class _TracesStartAtWork(Sampler):
        def should_sample(
            self, parent_context: Context | None, trace_id: int, name: str, kind: SpanKind | None = None,
            attributes: Any = None, links: Any = None, trace_state: Any = None,
        ) -> SamplingResult:  # fmt: skip
            if kind is SpanKind.CLIENT:
                return SamplingResult(Decision.DROP)
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)

        def get_description(self) -> str:
            return "TracesStartAtWork"

    return ParentBased(root=_TracesStartAtWork())


def _instrumentors() -> list[Any]:
    """The instrumentations (BaseInstrumentor, untyped), imported only when tracing is on. Each is a
    process-wide singleton patching its library's classes: every Redis and asyncpg connection and every
    httpx transport of the process (the one client of runner.resources) makes spans while tracing is on."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    return [AsyncPGInstrumentor(), RedisInstrumentor(), HTTPXClientInstrumentor()]  # type: ignore[no-untyped-call]
