"""The Ray Serve deployment: an OpenAI-compatible chat endpoint that routes every request.

``POST /v1/chat/completions`` (plain, or ``stream: true`` as server-sent events), ``GET /v1/models``
(the deployed router settings: what ``model`` may name), ``GET /metrics`` (Prometheus text) and
``GET /v1/routerbench/status`` (the same as JSON), both over every replica (each sends its counters
to the app's :class:`StatsCollector`, :mod:`harness.serving.metrics`). A request is:

1. parsed (400 on a body that is not a chat request) and its ``model`` looked up among the
   deployed settings (404 listing them);
2. embedded and routed: requests that arrive together are embedded in one call (``serve.batch``);
3. forwarded to the chosen model through its engine (:mod:`harness.serving.upstream`: limiter,
   retries, spend cap); a failure after the retries is a 502 naming the model;
4. answered with the model's answer, ``model`` = the model used, and the header
   ``x-routerbench-route`` (setting, model, predicted quality and cost); its traffic row is queued
   for the store (:mod:`harness.serving.traffic`), never waited for.

Streaming streams: the upstream is called with streaming on (:meth:`ApiCaller.stream`: retried
until its first text, settled with the stream's usage) and each delta goes out as a chunk as it
comes. A failure before the first text is a 502 as above; after it, an error event ends the stream.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request as HttpRequest
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from ray import serve

from harness.generation.api import Delta, StreamEvent
from harness.generation.base import Request, Result
from harness.serving.metrics import REPORT_S, ServeStats, StatsHub, StatsReport, prometheus_text
from harness.serving.plan import ServePlan
from harness.serving.traffic import TrafficRow, TrafficWriter
from harness.serving.wire import DONE, ROUTE_HEADER, BadBody, Chunks, completion_body, completion_id, error_body, models_body, parse_body

APP_NAME = "routerbench"  # the Serve application (one per Ray cluster: a second `serve` replaces it)

log = logging.getLogger(__name__)

api = FastAPI(title="routerbench serve")


def _error(status: int, message: str, kind: str, code: str | None = None, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, kind, code, param), status_code=status)


class _Served:
    """One routed request after routing: its traffic row, its stats, and its answer's relay."""

    def __init__(self, app: RouterApp, route, decision, body, upstream, request: Request, arrived: float, overhead: float) -> None:
        self.app, self.route, self.decision, self.body, self.upstream, self.request = app, route, decision, body, upstream, request
        self.arrived, self.overhead = arrived, overhead

    def record(self, result: Result) -> None:
        """Queue the traffic row (never waits for the store)."""
        r, d = self.route, self.decision
        self.app.writer.add(
            TrafficRow(
                self.request.sample_id, self.body.stored_prompt(), d.model, r.setting.name, r.setting.router, r.setting.config, r.lam,
                d.predicted_quality, d.predicted_cost, result.response, result.input_tokens, result.output_tokens,
                result.cost_usd, result.latency_s, self.upstream.config.config_hash(), None if result.ok else f"engine:{result.error}",
                pd.Timestamp.now(tz="UTC"),
            )
        )

    def done(self, result: Result) -> None:
        self.record(result)
        self.app.stats.served(self.decision.model, self.overhead, result.latency_s, result.cost_usd, time.perf_counter() - self.arrived)

    def message(self, result: Result) -> str:
        return f"model '{self.decision.model}' (chosen by {self.route.setting.name}) failed after {result.attempts} attempt(s): {result.error}: {result.error_detail}"

    def count_failure(self, result: Result) -> None:
        self.record(result)
        self.app.stats.failed(f"upstream:{result.error}")

    def failed(self, result: Result, headers: dict[str, str]) -> JSONResponse:
        self.count_failure(result)
        return JSONResponse(error_body(self.message(result), "upstream_error", result.error), status_code=502, headers=headers)

    async def relay(self, first: StreamEvent, events: AsyncIterator[StreamEvent]) -> AsyncIterator[bytes]:
        """The upstream's deltas as chunks while it writes; a failure after the first one ends the
        stream with an error event (the status was sent with the first chunk)."""
        chunks = Chunks(completion_id(), self.decision.model)
        event: StreamEvent | None = first
        try:
            yield chunks.role()
            while isinstance(event, Delta):
                yield chunks.content(event.text)
                event = await anext(events)
            assert isinstance(event, Result)
            if event.ok:
                self.done(event)
                yield chunks.finish(event.input_tokens, event.output_tokens)
            else:
                self.count_failure(event)
                yield chunks.error(self.message(event), "upstream_error", event.error)
            yield DONE
        finally:
            await events.aclose()  # the client went away mid-stream: the call's grant is settled all the same


@serve.deployment(name=f"{APP_NAME}-stats", num_replicas=1, ray_actor_options={"num_cpus": 0}, logging_config={"enable_access_log": False})
class StatsCollector:
    """The app's one :class:`StatsHub`: routing replicas send it their reports, ``/metrics`` and the
    status read its snapshot. Serve restarts it if it dies; the next reports bring the totals back."""

    def __init__(self) -> None:
        self.hub = StatsHub()

    def absorb(self, report: StatsReport) -> None:
        self.hub.absorb(report)

    def snapshot(self) -> dict:
        return self.hub.snapshot()


# No access log line per request: every request is in the metrics and the traffic table already,
# and on 2 cores the log line and its trip to the driver cost more than routing the request.
@serve.deployment(name=APP_NAME, max_ongoing_requests=512, ray_actor_options={"num_cpus": 0}, logging_config={"enable_access_log": False})
@serve.ingress(api)
class RouterApp:
    def __init__(self, plan: ServePlan, collector) -> None:  # noqa: ANN001 - a DeploymentHandle of StatsCollector
        self.plan, self.collector = plan, collector
        self._reporting: asyncio.Task | None = None
        self._sending = asyncio.Lock()  # reports leave in the order they are numbered
        if plan.cache_dir:
            os.environ["ROUTERBENCH_CACHE"] = plan.cache_dir  # the embedder built by the command is found, not rebuilt
        self.routes = {r.setting.name: r for r in plan.routes}
        context = serve.get_replica_context()
        self.stats = ServeStats(str(getattr(context, "replica_tag", None) or getattr(context, "replica_id", "0")))
        self.writer = TrafficWriter(plan.store_uri, plan.family, flush_s=plan.flush_s)
        try:  # Serve runs the constructor on the replica's loop: report from the start, requests or not
            self._start_reporting()
        except RuntimeError:  # no loop running here: the first request starts it
            pass
        plan.embedder.embed(["warm up"])  # loads the embedder before the first request

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def embed_many(self, texts: list[str]) -> list[np.ndarray]:
        """Requests that arrived together, embedded in one call, in a thread: ONNX releases the GIL,
        so the loop goes on relaying other requests' upstream answers meanwhile (~10 ms an embedding
        on a 2-core EPYC: on the loop it held them up; bench_serve, 2 × 2 runs: overhead p50 33 against
        36 ms, throughput ratio 0.63 against 0.61)."""
        return list(await asyncio.to_thread(self.plan.embedder.embed, texts))

    async def _report(self) -> None:
        """Send this replica's report to the collector (a failed send loses only its timings:
        the counters are totals and go again with the next one)."""
        try:
            async with self._sending:
                await self.collector.absorb.remote(self.stats.report(vars(self.writer.stats())))
        except Exception as exc:  # noqa: BLE001 - the collector restarting: metrics wait, requests do not
            log.warning("serve: metrics report not delivered (%s)", exc)

    async def _report_every(self) -> None:
        while True:
            await asyncio.sleep(REPORT_S)
            await self._report()

    def _start_reporting(self) -> None:
        if self._reporting is None:
            self._reporting = asyncio.get_running_loop().create_task(self._report_every())

    async def _snapshot(self) -> dict:
        self._start_reporting()
        await self._report()  # this replica's requests are all in
        return await self.collector.snapshot.remote()

    @api.get("/v1/models")
    async def models(self) -> JSONResponse:
        return JSONResponse(models_body(list(self.routes)))

    @api.get("/v1/routerbench/status")
    async def status(self) -> JSONResponse:
        return JSONResponse(await self._snapshot())

    @api.get("/metrics")
    async def metrics(self) -> PlainTextResponse:
        return PlainTextResponse(prometheus_text(await self._snapshot()), media_type="text/plain; version=0.0.4")

    @api.post("/v1/chat/completions")
    async def chat(self, http: HttpRequest):
        arrived = time.perf_counter()
        self._start_reporting()
        try:
            body = parse_body(await http.body())
        except BadBody as exc:
            self.stats.failed("bad_request")
            return _error(400, str(exc), "invalid_request_error", "invalid_body")
        route = self.routes.get(body.model)
        if route is None:
            self.stats.failed("unknown_model")
            return _error(404, f"model '{body.model}' is not deployed here; deployed: {', '.join(self.routes)}", "invalid_request_error", "model_not_found", "model")
        start = time.perf_counter()
        features = await self.embed_many(body.routing_text())
        decision = route.decide(features[None, :])[0]
        overhead = time.perf_counter() - start
        upstream = self.plan.upstreams[decision.model]
        request = Request(TrafficRow.new_id(), body.turns(), body.token_cap)
        headers = {ROUTE_HEADER: decision.header()}
        served = _Served(self, route, decision, body, upstream, request, arrived, overhead)
        if body.stream:
            events = upstream.stream(request)
            first = await anext(events)
            if isinstance(first, Result):  # failed before any text (after the retries): a status can still say so
                await events.aclose()
                if not first.ok:
                    return served.failed(first, headers)
            return StreamingResponse(served.relay(first, events), media_type="text/event-stream", headers=headers)
        result = await upstream.answer(request)
        if not result.ok:
            return served.failed(result, headers)
        served.done(result)
        return JSONResponse(completion_body(completion_id(), decision.model, result.response or "", result.input_tokens, result.output_tokens), headers=headers)

    def flush_traffic(self, timeout_s: float = 30.0) -> dict:
        """Write every queued traffic row now (for a graceful stop, and tests)."""
        return vars(self.writer.flush(timeout_s))

    def __del__(self) -> None:
        """Serve calls this on a graceful shutdown: what is queued still reaches the store."""
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.close(timeout_s=15.0)
