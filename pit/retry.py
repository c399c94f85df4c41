"""One retry rule for faults that pass on their own: the store, the LLM client, dump downloads.

Three kinds of failure, one rule (DESIGN.md, "Faults"): a transient fault (a
refused or dropped connection, a timeout, HTTP 5xx, 429 or an S3 throttling
code) is tried again after a wait that doubles up to a bound, drawn between
half and all of it so that clients hit by one outage do not come back in
step; bad input (a :class:`~pit.errors.PitError`) and bugs (a `TypeError`, a
shape mismatch) are raised at once, since trying again fails the same way.
A full disk (ENOSPC, a quota) is not transient either: nothing frees space
within a retry's wait, and a Prefect retry would refill the same disk.

:func:`is_transient` is the rule, read off the whole exception chain because
s3fs, aiohttp and httpx wrap each other's errors; :func:`retry` applies it to
any call, and Prefect's task retries apply it again after pit's own budget is
spent (`tasks/`), to a :class:`~pit.errors.TransientError` that says so. A
caller that makes headway between failures (a long download) passes
`progress`, so a link that drops every few minutes but keeps advancing is
never given up on, while one that makes no headway is.
"""

from __future__ import annotations

import errno
import functools
import http.client
import logging
import random
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pit.errors import PitError, TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth waiting out: overload, throttling, gateways, timeouts."""

THROTTLING_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeTooSkewed",
    }
)
"""Error codes in an S3 (or other AWS-style) reply that mean "not now"."""

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
"""errno values of a full disk or quota: never transient, whatever wraps them."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait out a transient fault before giving up on it."""

    attempts: int = 6
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0

    def delay(self, failures: int, at_least: float | None = None) -> float:
        """Seconds to wait after the `failures`-th failure in a row (1 for the first)."""
        wait = min(self.backoff_s * 2 ** (failures - 1), self.backoff_max_s)
        wait *= random.uniform(0.5, 1.0)
        if at_least is not None:
            wait = min(max(wait, at_least), self.backoff_max_s)
        return wait


class HTTPStatusFault(Exception):
    """An HTTP reply whose status says "not now" (see :data:`TRANSIENT_STATUS`).

    `retry_after` holds the seconds the server asked us to wait, when it said;
    `detail` what it said about it (the start of its reply).
    """

    def __init__(self, url: str, status: int, retry_after: float | None = None,
                 detail: str = "") -> None:
        self.url = url
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"HTTP {status} from {url}" + (f": {detail}" if detail else ""))


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then its causes and contexts, outermost first."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend([e.__cause__, e.__context__])


def service_error(exc: BaseException) -> tuple[str, int]:
    """The error code and HTTP status of an AWS-style reply anywhere in the chain, if any."""
    for e in exception_chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, dict) and "Error" in response:
            code = str(response["Error"].get("Code", ""))
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            return code, status
    return "", 0


@functools.cache
def _network_errors() -> tuple[type[BaseException], ...]:
    """Exception classes of a connection or read that failed, from the clients pit uses."""
    found: list[type[BaseException]] = [
        ConnectionError, TimeoutError, socket.timeout, http.client.IncompleteRead,
    ]
    try:
        import httpx

        found.append(httpx.TransportError)
    except ImportError:  # pragma: no cover - httpx is a dependency
        pass
    try:
        from botocore import exceptions as bce

        found += [bce.EndpointConnectionError, bce.ConnectionClosedError,
                  bce.ConnectTimeoutError, bce.ReadTimeoutError, bce.HTTPClientError,
                  bce.ResponseStreamingError]
    except ImportError:  # pragma: no cover - only without the S3 extras
        pass
    try:
        import aiohttp

        found += [aiohttp.ClientConnectionError, aiohttp.ClientPayloadError,
                  aiohttp.ServerTimeoutError]
    except ImportError:  # pragma: no cover - only without the S3 extras
        pass
    return tuple(found)


def _verdict(e: BaseException) -> bool | None:
    """What one link of a chain says: transient, not, or nothing (look further down)."""
    if isinstance(e, TransientError):
        return True
    if isinstance(e, PitError):
        return False
    if isinstance(e, OSError) and e.errno in DISK_FULL:
        return False
    if isinstance(e, HTTPStatusFault):
        return e.status in TRANSIENT_STATUS
    response = getattr(e, "response", None)
    if isinstance(response, dict) and "Error" in response:
        code, status = service_error(e)
        return code in THROTTLING_CODES or status >= 500 or status == 429
    import httpx

    if isinstance(e, httpx.HTTPStatusError):
        return e.response.status_code in TRANSIENT_STATUS
    if isinstance(e, _network_errors()) or type(e).__name__ in ("FSTimeoutError",
                                                                 "CommClosedError"):
        return True
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether waiting and trying again may succeed: network trouble or an overloaded server.

    The outermost link that says anything decides: a :class:`~pit.errors.TransientError`
    yes, any other `PitError` no (bad input, even when a dropped connection lies
    beneath it), a full disk no; then replies (5xx, 429, throttling codes yes,
    other codes no) and network errors. Anything else, a bug included, is not.
    """
    for e in exception_chain(exc):
        verdict = _verdict(e)
        if verdict is not None:
            return verdict
    return False


def describe(exc: BaseException) -> str:
    """`Type: first line` of an exception, short enough for one log line."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:300]


def retry(
    fn: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy,
    transient: Callable[[BaseException], bool] = is_transient,
    progress: Callable[[], object] | None = None,
    explain: Callable[[BaseException], str] = describe,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """`fn()`, tried again while it fails transiently, up to `policy.attempts` failures in a row.

    Raises the last exception unchanged once the budget is spent, or at once
    for a fault that is not transient; callers turn it into an error that
    names their input. `progress()` returns a marker of headway (bytes on
    disk, say): when it moved since the last failure, the count starts again.
    `explain` words an exception for the log line (the store's scrubs
    secrets); `on_retry` is told of each failure that is tried again.
    """
    failures = 0
    mark = progress() if progress is not None else None
    while True:
        try:
            return fn()
        except Exception as exc:
            if not transient(exc):
                raise
            if progress is not None:
                now = progress()
                if now != mark:
                    failures, mark = 0, now
            failures += 1
            if failures >= policy.attempts:
                raise
            hint = next((e.retry_after for e in exception_chain(exc)
                         if isinstance(e, HTTPStatusFault)), None)
            wait = policy.delay(failures, hint)
            log.warning(
                "%s failed (%s); retrying in %.2f s (failure %d of %d)",
                what, explain(exc), wait, failures, policy.attempts,
            )
            if on_retry is not None:
                on_retry(exc)
            time.sleep(wait)
