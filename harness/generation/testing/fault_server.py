"""A fault-injecting LLM server of our own, on 127.0.0.1, for tests and benchmarks.

It speaks the OpenAI chat-completions protocol (``POST /v1/chat/completions``) and Anthropic's
Messages API (``POST /v1/messages``), so the official SDKs can be pointed at it. Per call, in order:

1. a scripted outcome for that sample_id, if a test queued one (:meth:`FaultServer.script`);
2. its own requests/min and tokens/min token buckets (prompt + answer tokens): beyond them
   429 with ``retry-after`` (and ``retry-after-ms``) saying when capacity is back;
3. random faults at the :class:`FaultPlan`'s rates: 429 with or without ``retry-after`` (a server
   refusing at random, whatever the load), 500, a hang past the client's timeout, a dropped
   connection, a 200 with malformed JSON; and an optional delay;
4. an answer echoing the prompt's words, ``completion_tokens`` long (capped by max_tokens, cut at
   a stop sequence), with usage; with ``stream: true`` as server-sent events in the protocol's
   own chunks (a word a chunk, ``chunk_delay_s`` apart), which a ``cut`` fault cuts off by
   dropping the connection after some chunks, and :meth:`FaultServer.hold` pauses until a test
   lets it go on (so a test sees the first chunk arrive while the rest is not sent yet).

Every attempt is written to the :class:`Ledger` under the sample_id the harness sends in
``X-Routerbench-Sample-Id``, so a test can prove each request was answered once and only once.
Clients that disconnect cancel their handler (nothing is counted as served after that). A stream
is recorded once it ended: "ok" after its last event was written, "cut" when the fault cut it.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from harness.generation.testing.protocols import PROTOCOLS, Answer, Call, WireProtocol

SAMPLE_HEADER = "X-Routerbench-Sample-Id"
#: Scripted outcomes (:meth:`FaultServer.script`): "ok", an HTTP status ("500", "400", "401", "529" …),
#: "429" or "429:<retry-after seconds>" or "429:none" (no retry-after), "timeout", "drop", "malformed",
#: "delay:<seconds>" (then answers), "cut:<n>" (a streamed answer: the connection drops after its
#: first n text chunks, before anything else is written; a call that does not stream: as "drop").
OUTCOMES = re.compile(r"ok|timeout|drop|malformed|[1-5]\d\d|429:(?:[\d.]+|none)|delay:[\d.]+|cut:\d+")
HOLD_MAX_S = 30.0  # a held stream goes on by itself after this long


@dataclass
class FaultPlan:
    """What the server does beyond answering. Rates are per attempt, drawn from ``seed``."""

    requests_per_min: float | None = None
    tokens_per_min: float | None = None
    burst_s: float = 5.0  # seconds of the rates a burst may use (the buckets' depth)
    throttle_rate: float = 0.0  # 429s with retry-after: throttle_retry_after_s
    bare_throttle_rate: float = 0.0  # 429s without retry-after
    throttle_retry_after_s: float = 1.0
    error_rate: float = 0.0  # 500s
    timeout_rate: float = 0.0  # hang for hang_s, then close without an answer
    drop_rate: float = 0.0  # close the connection without an answer
    malformed_rate: float = 0.0  # 200 with a body that is not JSON
    delay_s: tuple[float, float] = (0.0, 0.0)  # uniform delay before a normal answer
    cut_rate: float = 0.0  # streamed answers cut off after cut_after_chunks text chunks (else: a drop)
    cut_after_chunks: int = 2
    chunk_delay_s: float = 0.0  # between a streamed answer's text chunks
    hang_s: float = 5.0
    completion_tokens: int = 16
    api_key: str | None = None  # when set, any other key gets 401
    seed: int = 0


@dataclass
class Attempt:
    sample_id: str
    at: float  # time.monotonic() at arrival
    outcome: str  # "ok", "429", "500", "timeout", "drop", "malformed", "cut", "client_gone", "401", …
    counted: bool  # charged to the server's rate limits


@dataclass
class Ledger:
    """Every attempt the server saw, thread-safe to read while it runs."""

    attempts: list[Attempt] = field(default_factory=list)
    bodies: dict[str, dict] = field(default_factory=dict)  # last request body per sample_id
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # lower-cased names
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, attempt: Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)

    def outcomes(self, sample_id: str) -> list[str]:
        with self.lock:
            return [a.outcome for a in self.attempts if a.sample_id == sample_id]

    def times(self, sample_id: str) -> list[float]:
        with self.lock:
            return [a.at for a in self.attempts if a.sample_id == sample_id]

    def served(self) -> Counter:
        """Answers delivered (200 with a valid body) per sample_id."""
        with self.lock:
            return Counter(a.sample_id for a in self.attempts if a.outcome == "ok")

    def counts(self) -> Counter:
        with self.lock:
            return Counter(a.outcome for a in self.attempts)

    def counted_times(self) -> list[float]:
        """Arrival times of the attempts charged to the rate limits (all but 429s and rejections)."""
        with self.lock:
            return [a.at for a in self.attempts if a.counted]


class _Bucket:
    """The server's own token bucket (written apart from the client's, so one checks the other)."""

    def __init__(self, per_min: float | None, burst_s: float) -> None:
        self.rate = None if per_min is None else per_min / 60.0
        self.capacity = 0.0 if per_min is None else max(per_min * burst_s / 60.0, 1.0)
        self.level, self.t = self.capacity, time.monotonic()

    def shortfall_s(self, amount: float) -> float:
        if self.rate is None:
            return 0.0
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now
        need = min(amount, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def charge(self, amount: float) -> None:
        if self.rate is not None:
            self.level -= amount


def count_tokens(text: str) -> int:
    """The server's tokenizer: a token per 4 characters (the client's estimate is more cautious)."""
    return math.ceil(len(text) / 4)


def pieces(text: str) -> list[str]:
    """A streamed answer's chunks: a word each, with the whitespace before it."""
    return re.findall(r"\s*\S+|\s+$", text)


def answer_text(call: Call, n_tokens: int) -> tuple[str, int, str | None]:
    """The echo answer: the prompt's words, cycled, ``n_tokens`` words long, cut at a stop sequence."""
    words = call.last_user.split() or ["ok"]
    text = " ".join(words[i % len(words)] for i in range(n_tokens))
    for stop in call.stop:
        if stop and stop in text:
            text = text[: text.index(stop)]
            return text, len(text.split()), stop
    return text, n_tokens, None


class FaultServer:
    """The server, run on its own event loop in a background thread (``with FaultServer(plan) as s``)."""

    def __init__(self, plan: FaultPlan | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the fault server listens on the loopback interface only")
        self.plan = plan or FaultPlan()
        self.host, self.port = host, port
        self.ledger = Ledger()
        self._scripts: dict[str, deque[str]] = defaultdict(deque)
        self._holds: dict[str, tuple[int, threading.Event]] = {}
        self._rng = random.Random(self.plan.seed)
        self._requests = _Bucket(self.plan.requests_per_min, self.plan.burst_s)
        self._tokens = _Bucket(self.plan.tokens_per_min, self.plan.burst_s)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ control
    @property
    def url(self) -> str:
        """Base URL for the OpenAI SDK (``…/v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """Base URL for the Anthropic SDK (it appends ``/v1/messages`` itself)."""
        return f"http://{self.host}:{self.port}"

    def script(self, sample_id: str, outcomes: list[str]) -> None:
        """Queue outcomes for the next attempts of ``sample_id``; afterwards it is answered normally."""
        for outcome in outcomes:
            if not OUTCOMES.fullmatch(outcome):
                raise ValueError(f"unknown scripted outcome {outcome!r}")
        self._scripts[sample_id].extend(outcomes)

    def hold(self, sample_id: str, after_chunks: int = 1) -> threading.Event:
        """Pause the next streamed answer to ``sample_id`` after its first ``after_chunks`` text
        chunks, until the returned event is set (or ``HOLD_MAX_S`` passed)."""
        release = threading.Event()
        self._holds[sample_id] = (after_chunks, release)
        return release

    def start(self) -> FaultServer:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="fault-server", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("fault server did not start within 30 s")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)  # type: ignore[union-attr]
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=16 * 2**20)
        app.router.add_get("/v1/models", self._models)
        for proto in PROTOCOLS.values():
            app.router.add_post(proto.path, self._handler(proto))
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, self.host, self.port)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()
        self._loop.run_forever()
        self._loop.close()

    # ------------------------------------------------------------------ serving
    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fault-model", "object": "model", "owned_by": "routerbench"}]})

    def _handler(self, proto: WireProtocol):
        async def handle(request: web.Request) -> web.StreamResponse:
            sample_id = request.headers.get(SAMPLE_HEADER) or f"anonymous-{id(request)}"
            at, recorded = time.monotonic(), []

            def record(outcome: str, counted: bool) -> None:
                recorded.append(outcome)
                self.ledger.record(Attempt(sample_id, at, outcome, counted))

            try:
                return await self._answer(proto, request, sample_id, record)
            except asyncio.CancelledError:
                if not recorded:
                    record("client_gone", True)
                raise

        return handle

    def _next_scripted(self, sample_id: str) -> str | None:
        queue = self._scripts.get(sample_id)
        return queue.popleft() if queue else None

    def _random_fault(self) -> str | None:
        p, r = self.plan, self._rng.random()
        faults = (
            (f"429:{p.throttle_retry_after_s}", p.throttle_rate),
            ("429:none", p.bare_throttle_rate),
            ("500", p.error_rate),
            ("timeout", p.timeout_rate),
            ("drop", p.drop_rate),
            ("malformed", p.malformed_rate),
            (f"cut:{p.cut_after_chunks}", p.cut_rate),
        )
        for outcome, rate in faults:
            if r < rate:
                return outcome
            r -= rate
        return None

    def _rate_limited_s(self, tokens: int) -> float:
        """0 and the call is charged to the buckets, or the seconds until it would fit."""
        wait = max(self._requests.shortfall_s(1), self._tokens.shortfall_s(tokens))
        if wait <= 0:
            self._requests.charge(1)
            self._tokens.charge(tokens)
        return wait

    async def _answer(self, proto: WireProtocol, request: web.Request, sample_id: str, record) -> web.StreamResponse:
        try:
            body = await request.json()
            call = proto.parse(body)
        except (ValueError, KeyError, TypeError) as exc:
            record("400", False)
            return proto.error(400, f"invalid request body: {exc}")
        self.ledger.bodies[sample_id] = body
        self.ledger.headers[sample_id] = {k.lower(): v for k, v in request.headers.items()}
        if self.plan.api_key is not None and proto.key(request) != self.plan.api_key:
            record("401", False)
            return proto.error(401, "invalid api key")

        prompt_tokens = sum(count_tokens(t) for t in call.texts) + 3 * len(call.texts)
        n_tokens = max(1, min(call.max_tokens, self.plan.completion_tokens))
        outcome = self._next_scripted(sample_id)
        charged = outcome is None or outcome == "ok" or outcome.startswith(("delay", "cut"))
        if charged:  # scripted faults bypass the limits, so a test controls exactly what happens
            wait = self._rate_limited_s(prompt_tokens + n_tokens)
            if wait > 0:
                record("429", False)
                return proto.error(429, "rate limit reached", retry_after_s=wait)
        if outcome is None:
            outcome = self._random_fault() or "ok"
            if outcome.startswith("429"):  # refused: not charged to the limits after all
                self._requests.charge(-1)
                self._tokens.charge(-(prompt_tokens + n_tokens))

        if outcome.startswith("429"):
            record("429", False)
            asked = outcome.partition(":")[2] or "1.0"
            return proto.error(429, "rate limit reached (injected)", retry_after_s=None if asked == "none" else float(asked))
        if outcome[:1].isdigit():
            record(outcome, charged)
            return proto.error(int(outcome), f"injected {outcome}")
        if outcome.startswith("cut") and not call.stream:
            outcome = "drop"
        if outcome in ("timeout", "drop"):
            record(outcome, charged)
            try:
                if outcome == "timeout":
                    await asyncio.sleep(self.plan.hang_s)
            finally:
                if request.transport is not None:  # None: the client already hung up
                    request.transport.abort()
            return web.Response(status=500)  # never reaches the client
        if outcome == "malformed":
            record("malformed", charged)
            return web.Response(status=200, body=b'{"id": "broken", "choices": [{"message": ', content_type="application/json")

        if outcome.startswith("delay"):
            await asyncio.sleep(float(outcome.partition(":")[2] or 1.0))
        elif self.plan.delay_s[1] > 0:
            await asyncio.sleep(self._rng.uniform(*self.plan.delay_s))
        text, n_out, stop = answer_text(call, n_tokens)
        if call.stream:
            answer = Answer(pieces(text), prompt_tokens, n_out, stop, n_out >= call.max_tokens)
            cut = int(outcome.partition(":")[2]) if outcome.startswith("cut") else None
            return await self._stream(proto, request, call, answer, sample_id, cut, lambda outcome: record(outcome, charged))
        response = web.json_response(proto.answer(call, text, prompt_tokens, n_out, stop, n_out >= call.max_tokens))
        record("ok", charged)
        return response

    async def _stream(self, proto: WireProtocol, request: web.Request, call: Call, answer: Answer, sample_id: str, cut: int | None, record) -> web.StreamResponse:
        """The answer as server-sent events; ``cut``: drop the connection after that many text chunks."""
        hold = self._holds.pop(sample_id, None)
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        sent = 0  # text chunks written
        try:
            for data, is_text in proto.stream(call, answer):
                if cut is not None and sent >= cut:
                    record("cut")
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                if hold is not None and sent >= hold[0]:
                    deadline = time.monotonic() + HOLD_MAX_S
                    while not hold[1].is_set() and time.monotonic() < deadline:
                        await asyncio.sleep(0.002)
                    hold = None
                if is_text:
                    if sent and self.plan.chunk_delay_s > 0:
                        await asyncio.sleep(self.plan.chunk_delay_s)
                    sent += 1
                await response.write(data)
            await response.write_eof()
        except ConnectionError:  # the client hung up between chunks
            record("client_gone")
            return response
        record("ok")
        return response
