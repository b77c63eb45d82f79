"""Served requests as store rows, written in batches by a thread of their own.

A request only puts its row on a queue (no I/O, no lock held for long); the writer thread appends
what has queued ``flush_s`` seconds after the first row of a batch came (sooner once ``batch_rows``
rows wait) as one ``Store.append`` (a prompts commit, then an outcomes commit). Its sample_ids are
new (:meth:`TrafficRow.new_id`), so the append reads no stored key (``fresh_keys``: its cost stays
flat as the traffic grows); after a failure, which may have come between the two commits, the
next append checks keys as any append does, so a retried row is written once. A failed append (store down, a
conflict) keeps the rows and is retried with exponential backoff up to ``max_backoff_s``; the
failures are counted and the last error kept, so operators see them (``/v1/routerbench/status``,
``/metrics``), while requests keep being answered. Rows beyond ``max_pending`` (a long outage)
are dropped oldest first, and counted as dropped.

Traffic rows have no gold and no score: prompts in family ``traffic`` (task = the family), with
the route in ``meta`` (setting, the model it chose, router, config, λ, predicted quality and cost;
once other models answer the prompt too, it still says which answer the user got); outcomes keyed
by ``(sample_id, model actually used)``, with response, tokens, cost, latency, the model config's
``config_hash`` and ``engine:<kind>`` in ``error`` for a failed upstream call.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass

import pandas as pd

from harness.errors import first_line
from harness.store import Store

log = logging.getLogger(__name__)

#: Seconds between traffic commits: each commit reads the keys of the tables it writes, so on
#: 2 cores a commit a second took a fifth of the replica's CPU at 40 requests/s. A crash loses
#: at most this much of the traffic; a graceful stop writes everything.
FLUSH_S = 5.0


@dataclass(frozen=True)
class TrafficRow:
    """One served request: the prompt, where it went, what came back."""

    sample_id: str
    prompt: str
    model: str
    route: str  # the setting's name, e.g. knn:k=10@cost=0.001
    router: str
    config: str
    lam: float
    predicted_quality: float
    predicted_cost: float
    response: str | None
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    latency_s: float | None
    config_hash: str
    error: str | None
    created_at: pd.Timestamp

    @staticmethod
    def new_id() -> str:
        """Time-ordered and unique across replicas and restarts."""
        return f"traffic-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class WriterStats:
    written: int  # rows committed to the store
    pending: int  # rows waiting (queued or being retried)
    failed_appends: int  # append attempts that raised
    dropped: int  # rows given up (queue full during an outage)
    last_error: str | None


def traffic_frames(rows: list[TrafficRow], family: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The prompts and outcomes frames of a batch (one frame build, no per-row appends)."""
    df = pd.DataFrame([asdict(r) for r in rows])
    meta = [json.dumps({"route": r.route, "model": r.model, "router": r.router, "config": r.config, "lam": r.lam, "predicted_quality": r.predicted_quality, "predicted_cost": r.predicted_cost}) for r in rows]
    prompts = pd.DataFrame({"sample_id": df["sample_id"], "task": family, "task_family": family, "prompt": df["prompt"], "gold": None, "meta": meta, "created_at": df["created_at"]})
    outcomes = df[["sample_id", "model", "response", "input_tokens", "output_tokens", "cost_usd", "latency_s", "config_hash", "error", "created_at"]].assign(
        score=None, cost_source="tokens×price", grader=None
    )
    return prompts, outcomes


class TrafficWriter:
    """Appends :class:`TrafficRow` batches to a store, off the request path."""

    def __init__(
        self,
        store_uri: str,
        family: str = "traffic",
        batch_rows: int = 256,
        flush_s: float = FLUSH_S,
        max_backoff_s: float = 30.0,
        max_pending: int = 100_000,
    ) -> None:
        self.store_uri, self.family = store_uri, family
        self.batch_rows, self.flush_s, self.max_backoff_s, self.max_pending = batch_rows, flush_s, max_backoff_s, max_pending
        self._rows: deque[TrafficRow] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._flush_now = False
        self._in_flight = 0
        self.written = self.failed_appends = self.dropped = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="traffic-writer", daemon=True)
        self._thread.start()

    def add(self, row: TrafficRow) -> None:
        """Queue a row; never blocks on the store."""
        with self._wake:
            self._rows.append(row)
            if len(self._rows) > self.max_pending:
                self._rows.popleft()
                self.dropped += 1
            if len(self._rows) == 1 or len(self._rows) >= self.batch_rows:
                self._wake.notify()

    def stats(self) -> WriterStats:
        with self._wake:
            return WriterStats(self.written, len(self._rows) + self._in_flight, self.failed_appends, self.dropped, self.last_error)

    def flush(self, timeout_s: float = 30.0) -> WriterStats:
        """Wait until every queued row is written (or ``timeout_s``); the stats say what is left."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stats = self.stats()
            if stats.pending == 0:
                return stats
            with self._wake:
                self._flush_now = True
                self._wake.notify()
            time.sleep(0.02)
        return self.stats()

    def close(self, timeout_s: float = 30.0) -> WriterStats:
        """Write what is queued, then stop the thread."""
        stats = self.flush(timeout_s)
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout_s)
        if stats.pending:
            log.error("traffic: %d rows could not be written to %s (%s)", stats.pending, self.store_uri, stats.last_error)
        return stats

    def _take(self) -> list[TrafficRow]:
        """The next batch: what has queued ``flush_s`` after its first row came (sooner when full,
        flushed or closing)."""
        with self._wake:
            if not self._rows:
                self._flush_now = False  # asked for rows written since: it must not cut the next batch short
            while not self._rows and not self._closing:
                self._wake.wait()
            deadline = time.monotonic() + self.flush_s
            while len(self._rows) < self.batch_rows and not (self._closing or self._flush_now) and (left := deadline - time.monotonic()) > 0:
                self._wake.wait(left)
            self._flush_now = False
            batch = [self._rows.popleft() for _ in range(min(len(self._rows), self.batch_rows * 16))]
            self._in_flight = len(batch)
            return batch

    def _put_back(self, batch: list[TrafficRow]) -> None:
        with self._wake:
            self._rows.extendleft(reversed(batch))
            self._in_flight = 0
            while len(self._rows) > self.max_pending:
                self._rows.popleft()
                self.dropped += 1

    def _run(self) -> None:
        store: Store | None = None
        backoff = 0.0
        fresh = True  # False after a failed append: some of its rows may be stored already
        while True:
            batch = self._take()
            if not batch:
                if self._closing:
                    return
                continue
            try:
                prompts, outcomes = traffic_frames(batch, self.family)
                store = store or Store(self.store_uri)  # opened here: an unreachable store is an outage too
                store.append(prompts, outcomes, source=f"serve traffic ({self.family})", fresh_keys=fresh)
            except Exception as exc:  # noqa: BLE001 - any store failure: keep the rows, retry later
                self.failed_appends += 1
                self.last_error = f"{type(exc).__name__}: {first_line(exc)}"[:300]
                log.warning("traffic: %d rows not written yet (%s); retrying", len(batch), self.last_error)
                self._put_back(batch)
                fresh = False
                backoff = min(self.max_backoff_s, max(0.05, 2 * backoff))
                if self._closing:
                    return
                time.sleep(backoff)
                continue
            backoff, fresh = 0.0, True
            with self._wake:
                self.written += len(batch)
                self._in_flight = 0
