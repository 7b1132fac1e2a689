"""Traces: the API request, the story job it enqueues, the media jobs that one enqueues and every provider call
are one trace, linked parent to child through the job payloads; with tracing off there is none of it.

OpenTelemetry's tracer provider is global and set once per process: `exporter` installs an in-memory one for
the session, and `traces` turns tracing on for one test only (runner.tracing reads the global provider when a
span starts), so no other test makes spans.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from jobs import registry
from jobs.ids import STORY_JOB
from runner import envelope, tracing
from runner.broker.keys import QueueKeys
from runner.client import JobClient
from runner.context import CURRENT_JOB_ID
from runner.resources import Resources
from runner.settings import Settings
from tests.conftest import RunWorker, api_client, wait_for
from tests.fakes.provider_server import FakeProviderServer, Reply
from tests.integration.test_story_flow import post_story, until_story
from tests.integration.test_story_over_http import http_settings

HTTPX = "opentelemetry.instrumentation.httpx"


@pytest.fixture(scope="session")
def exporter() -> Iterator[InMemorySpanExporter]:
    """An in-memory tracer provider with the runner's sampler, made the global one once for the session."""
    spans = InMemorySpanExporter()
    provider = tracing.tracer_provider("tests")
    provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(provider)
    assert trace.get_tracer_provider() is provider, "another tracer provider was made global first"
    yield spans
    provider.shutdown()


@pytest.fixture
def traces(exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """Tracing on (instrumentations installed) for one test; off again after it, its spans dropped."""
    exporter.clear()
    tracing.enable()
    yield exporter
    tracing.disable()
    exporter.clear()


@pytest.fixture
async def fake() -> AsyncIterator[FakeProviderServer]:
    async with FakeProviderServer() as server:
        yield server


async def story_over_http(settings: Settings, run_worker: RunWorker) -> dict[str, Any]:
    """POST one story through the real app; a worker runs it over real HTTP; return it once it ended."""
    await run_worker(registry, settings)
    async with api_client(settings) as api:
        created = await post_story(api)
        story = await until_story(api, created["story_id"], "completed", "failed")
        status = (await api.get(f"/stories/{created['story_id']}/status")).json()
    assert story["status"] == "completed", story
    return {**story, "job_id": status["job_id"]}


async def ended_runs(spans: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    """Every span so far, once `count` job runs have ended (the last one ends after it completed the story)."""

    async def runs_ended() -> bool:
        return len(named(spans.get_finished_spans(), "run ")) >= count

    await wait_for(runs_ended, timeout=10)
    return list(spans.get_finished_spans())


def named(spans: Iterable[ReadableSpan], prefix: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name.startswith(prefix)]


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    found, parent = [], parent_of(span)
    while parent is not None and parent in by_id:
        found.append(by_id[parent])
        parent = parent_of(by_id[parent])
    return found


async def test_a_story_is_one_trace_from_the_request_to_the_provider_calls(
    traces: InMemorySpanExporter, settings: Settings, fake: FakeProviderServer, run_worker: RunWorker
):
    """POST /stories/ -> enqueue -> story run -> enqueue media -> media runs -> provider HTTP calls: one trace,
    each span the child of the one before, and the trace context reaches the providers in `traceparent`."""
    settings = http_settings(settings, fake).model_copy(update={"story_scenes": 2})
    story = await story_over_http(settings, run_worker)
    spans = await ended_runs(traces, 3)
    by_id = {s.context.span_id: s for s in spans}
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER and s.name == "POST /stories/"]
    assert server.parent is None
    in_trace = [s for s in spans if s.context.trace_id == server.context.trace_id]
    (enqueue,) = named(in_trace, "enqueue story_task.generate")
    assert enqueue.kind is SpanKind.PRODUCER and server in ancestors(enqueue, by_id)
    (run,) = named(in_trace, "run story_task.generate")
    assert (run.kind, parent_of(run)) == (SpanKind.CONSUMER, enqueue.context.span_id)
    assert attrs(run) == {"job.id": story["job_id"], "job.name": STORY_JOB, "job.attempt": 1,
                                          "job.queue": settings.queue_name, "job.outcome": "completed"}  # fmt: skip
    enqueue_media = named(in_trace, "enqueue media_task.generate")
    media_runs = named(in_trace, "run media_task.generate")
    assert len(enqueue_media) == len(media_runs) == 2
    assert all(parent_of(e) == run.context.span_id for e in enqueue_media)
    enqueued_by_id = {e.context.span_id: e for e in enqueue_media}
    for media in media_runs:  # each media run is the child of the enqueue of the same job
        enqueued = enqueued_by_id[parent_of(media) or 0]
        assert (attrs(media)["job.id"], attrs(media)["job.outcome"]) == (attrs(enqueued)["job.id"], "completed")
    calls = [s for s in spans if s.instrumentation_scope and s.instrumentation_scope.name == HTTPX]
    assert len(calls) == 2 + 2 * 3, [c.attributes for c in calls]  # story, profile; per scene: prompt, image, speech
    assert all(c.context.trace_id == server.context.trace_id and c.kind is SpanKind.CLIENT for c in calls)
    story_calls = [c for c in calls if parent_of(c) == run.context.span_id]
    assert urls(story_calls) == ["/v1/chat/completions"] * 2
    for media in media_runs:
        mine = [c for c in calls if parent_of(c) == media.context.span_id]
        assert sorted(urls(mine)) == ["/v1/chat/completions", "/v1/images/generations",
                                      f"/v1/text-to-speech/{settings.speech_voice_id}"]  # fmt: skip
    scopes = {s.instrumentation_scope.name for s in in_trace if s.instrumentation_scope}
    assert {"opentelemetry.instrumentation.asyncpg", "opentelemetry.instrumentation.redis"} <= scopes
    trace_hex = format(server.context.trace_id, "032x")
    assert all(trace_hex in r.headers["traceparent"] for r in fake.requests_to("chat") + fake.requests_to("tts"))
    assert not [s for s in spans if s.parent is None and s.kind is SpanKind.CLIENT], "stray root CLIENT spans"


def urls(spans: Iterable[ReadableSpan]) -> list[str]:
    out = []
    for span in spans:
        url = str(attrs(span).get("http.url") or attrs(span).get("url.full"))
        out.append("/v1/" + url.split("/v1/", 1)[1])
    return out


async def test_each_attempt_of_a_retried_job_is_its_own_run_span(
    traces: InMemorySpanExporter, settings: Settings, fake: FakeProviderServer, run_worker: RunWorker
):
    """A story job whose first try is rate limited has two run spans, both children of its one enqueue span:
    the first an error recording the provider's refusal (outcome retrying), the second completed."""
    settings = http_settings(settings, fake).model_copy(update={"story_scenes": 1, "provider_call_retries": 0})
    fake.script("chat", [Reply.openai_error(429, "slow down", headers={"Retry-After": "0"})])
    await story_over_http(settings, run_worker)
    spans = await ended_runs(traces, 3)
    (enqueue,) = named(spans, "enqueue story_task.generate")
    first, second = sorted(named(spans, "run story_task.generate"), key=lambda s: int(attrs(s)["job.attempt"]))
    assert parent_of(first) == parent_of(second) == enqueue.context.span_id
    assert (attrs(first)["job.attempt"], attrs(second)["job.attempt"]) == (1, 2)
    assert attrs(first)["job.outcome"] == "retrying" and first.status.status_code is StatusCode.ERROR
    assert "429" in (first.status.description or "")
    (error,) = [e for e in first.events if e.name == "exception"]
    assert str((error.attributes or {})["exception.type"]).endswith("ProviderRateLimited")
    assert attrs(second)["job.outcome"] == "completed" and second.status.status_code is StatusCode.UNSET
    (media,) = named(spans, "run media_task.generate")
    assert ancestors(media, {s.context.span_id: s for s in spans})[1] is second  # enqueued by the second try


async def test_tracing_off_makes_no_spans_and_sends_no_context(
    exporter: InMemorySpanExporter, settings: Settings, fake: FakeProviderServer, run_worker: RunWorker
):
    """Off (the default), a whole story makes no span even with a global SDK provider installed, and the
    provider requests carry no trace context (for the payloads, see the next test)."""
    assert not tracing.enabled()
    exporter.clear()
    await story_over_http(http_settings(settings, fake).model_copy(update={"story_scenes": 2}), run_worker)
    await asyncio.sleep(0.2)  # the last media job's bookkeeping
    assert exporter.get_finished_spans() == ()
    assert fake.requests_to("chat") and not [r for r in fake.requests_to("chat") if "traceparent" in r.headers]


async def test_the_payload_carries_the_enqueue_span_only_when_tracing_is_on(
    exporter: InMemorySpanExporter, settings: Settings, resources: Resources
):
    """`m` gets `traceparent` (the enqueue span's) next to `parent` when tracing is on; off, only `parent`."""
    client = JobClient(resources, registry.resolved(settings))
    token = CURRENT_JOB_ID.set("parent-job")
    try:
        off = await enqueued_meta(client, resources, settings)
        tracing.enable()
        try:
            exporter.clear()
            on = await enqueued_meta(client, resources, settings)
        finally:
            tracing.disable()
    finally:
        CURRENT_JOB_ID.reset(token)
    assert off == {"parent": "parent-job"}
    (span,) = named(exporter.get_finished_spans(), "enqueue story_task.generate")
    assert on == {
        "parent": "parent-job",
        "traceparent": f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{span.context.trace_flags:02x}",
    }
    assert attrs(span)["job.queue"] == settings.queue_name
    carried = trace.get_current_span(tracing.extract(on)).get_span_context()
    assert (carried.trace_id, carried.span_id, carried.is_remote) == (span.context.trace_id, span.context.span_id, True)
    assert tracing.inject() == {}  # off again: nothing to carry


async def enqueued_meta(client: JobClient, resources: Resources, settings: Settings) -> dict[str, str]:
    """Enqueue a story job (no worker runs this test's queue) and read its payload's metadata from Redis."""
    job_id = f"{STORY_JOB}:{uuid.uuid4()}"
    await client.enqueue(STORY_JOB, job_id=job_id, story_id=str(uuid.uuid4()))
    payload = await resources.redis.get(QueueKeys.of(settings.queue_name).job(job_id))
    assert payload is not None
    return envelope.decode_job(payload).meta
