"""Which failures are worth another attempt, and how long to wait before it.

:func:`classify` turns any exception an SDK or the network raised into one of
:data:`~harness.generation.base.ERROR_KINDS`: HTTP status first (429 → rate_limited, 5xx and
Anthropic's 529 → server_error, 400/422 → bad_request, 401/403 → auth, 404 → not_found), then the
exception's type (timeouts, connection errors, bodies that do not parse). Protocols add their
SDK's exception types with :func:`register_error`.

Retries use tenacity. A retryable failure is retried until ``limits.retry_deadline_s`` after the
request's first failure (and at most ``max_retries`` times where that is set): transient faults
must not cost a batch its answers. Waits are the server's ``retry-after`` (plus a little jitter)
where it sent one, else exponential backoff with full jitter; no wait runs past the deadline, and
a ``retry-after`` beyond it ends the request at once (the server would refuse an earlier try).
The error kept is the last attempt's.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from harness.generation.base import RETRYABLE_KINDS
from harness.model_config import Limits

STATUS_KINDS = {400: "bad_request", 401: "auth", 403: "auth", 404: "not_found", 408: "timeout", 409: "server_error", 422: "bad_request", 429: "rate_limited"}
MAX_RETRY_AFTER_S = 600.0  # a server asking for longer is treated as asking for this


class MalformedResponse(Exception):
    """The server answered 200 with a body that is not the protocol's JSON."""


class SpendCapReached(Exception):
    """The limiter refused the call: the config's max_spend_usd would be exceeded."""


# Exception type → kind, most specific first (a timeout is also a connection error in the SDKs).
_ERROR_TYPES: list[tuple[type[BaseException], str]] = [
    (SpendCapReached, "spend_cap"),
    (MalformedResponse, "malformed"),
    (json.JSONDecodeError, "malformed"),
    (asyncio.TimeoutError, "timeout"),
    (TimeoutError, "timeout"),
    (ConnectionError, "connection"),
]


def register_error(exc_type: type[BaseException], kind: str) -> None:
    """Map an SDK's exception type to an error kind (checked before the generic types)."""
    _ERROR_TYPES.insert(0, (exc_type, kind))


def status_kind(status: int) -> str:
    if status in STATUS_KINDS:
        return STATUS_KINDS[status]
    return "server_error" if status >= 500 else "bad_request" if status >= 400 else "malformed"


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and status >= 400 else None


def classify(exc: BaseException) -> str:
    status = _status(exc)
    if status is not None:
        return status_kind(status)
    for exc_type, kind in _ERROR_TYPES:
        if isinstance(exc, exc_type):
            return kind
    return "engine"


def is_retryable(exc: BaseException) -> bool:
    return classify(exc) in RETRYABLE_KINDS


def retry_after_s(exc: BaseException) -> float | None:
    """The wait a server asked for: ``retry-after-ms``, ``retry-after`` in seconds or as an HTTP date."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return min(float(ms) / 1000.0, MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return None if when is None else min(max(when.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER_S)


def _asked_s(retry_state: RetryCallState) -> float | None:
    exc = retry_state.outcome.exception() if retry_state.outcome else None
    return retry_after_s(exc) if exc is not None else None


class wait_backoff(wait_base):
    """``retry-after`` when the server gave one, else full-jitter exponential backoff."""

    def __init__(self, base_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.base_s, self.max_s = base_s, max_s
        self.rng = rng or random.Random()

    def __call__(self, retry_state: RetryCallState) -> float:
        asked = _asked_s(retry_state)
        if asked is not None:
            return asked + self.rng.uniform(0, self.base_s)
        doubling = min(retry_state.attempt_number - 1, 60)  # retried until a deadline: no overflow
        return self.rng.uniform(0, min(self.max_s, self.base_s * 2**doubling))


class RetryDeadline(stop_base):
    """Stops retrying ``seconds`` after the first failure, or when the server's ``retry-after``
    lies beyond that (a retry before it would be refused too). One per request: it keeps the
    time of that request's first failure."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.first_failure: float | None = None

    def left_s(self, retry_state: RetryCallState) -> float:
        now = retry_state.outcome_timestamp or time.monotonic()  # tenacity's clock is monotonic
        if self.first_failure is None or retry_state.attempt_number == 1:
            self.first_failure = now
        return self.first_failure + self.seconds - now

    def __call__(self, retry_state: RetryCallState) -> bool:
        left = self.left_s(retry_state)
        asked = _asked_s(retry_state)
        return left <= 0 or (asked is not None and asked > left)


class wait_within(wait_base):
    """A wait cut to the time the deadline leaves."""

    def __init__(self, wait: wait_base, deadline: RetryDeadline) -> None:
        self.wait, self.deadline = wait, deadline

    def __call__(self, retry_state: RetryCallState) -> float:
        return max(0.0, min(self.wait(retry_state), self.deadline.left_s(retry_state)))


def retrying(limits: Limits) -> AsyncRetrying:
    """The retry policy of a model config, for one request: retryable kinds until the deadline."""
    deadline = RetryDeadline(limits.retry_deadline_s)
    stop = deadline if limits.max_retries is None else deadline | stop_after_attempt(limits.max_retries + 1)
    return AsyncRetrying(
        stop=stop,
        wait=wait_within(wait_backoff(limits.backoff_s, limits.max_backoff_s), deadline),
        retry=retry_if_exception(is_retryable),
        reraise=True,
    )
