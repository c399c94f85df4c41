"""One retry rule for faults that pass on their own, for everything pit reads over a network.

Three kinds of failure, one rule (DESIGN.md, "Faults"): a transient fault (a
refused or dropped connection, a timeout, HTTP 5xx, 429 throttling) is tried
again after a wait that doubles up to a bound, drawn between half and all of
it so that clients hit by one outage do not come back in step; bad input and
bugs are raised at once, since trying again fails the same way.
:func:`is_transient` is the rule and :func:`retry` applies it to any call; a
caller that makes headway between failures (a long download) passes
`progress`, so a link that drops every few minutes but keeps advancing is
never given up on, while one that makes no headway is.
"""

from __future__ import annotations

import http.client
import logging
import random
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from pit.errors import TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP statuses worth waiting out: overload, throttling, gateways, timeouts."""


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

    `retry_after` holds the seconds the server asked us to wait, when it said.
    """

    def __init__(self, url: str, status: int, retry_after: float | None = None) -> None:
        self.url = url
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"HTTP {status} from {url}")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo.extend([e.__cause__, e.__context__])


def is_transient(exc: BaseException) -> bool:
    """Whether waiting and trying again may succeed: network trouble or an overloaded server."""
    import httpx

    for e in _chain(exc):
        if isinstance(e, HTTPStatusFault):
            return e.status in TRANSIENT_STATUS
        if isinstance(e, httpx.HTTPStatusError):
            return e.response.status_code in TRANSIENT_STATUS
        if isinstance(
            e,
            (
                TransientError,
                ConnectionError,
                TimeoutError,
                socket.timeout,
                http.client.IncompleteRead,
                httpx.TransportError,
            ),
        ):
            return True
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
) -> T:
    """`fn()`, tried again while it fails transiently, up to `policy.attempts` failures in a row.

    Raises the last exception unchanged once the budget is spent, or at once
    for a fault that is not transient; callers turn it into an error that
    names their input. `progress()` returns a marker of headway (bytes on
    disk, say): when it moved since the last failure, the count starts again.
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
            hint = next(
                (e.retry_after for e in _chain(exc) if isinstance(e, HTTPStatusFault)), None
            )
            wait = policy.delay(failures, hint)
            log.warning(
                "%s failed (%s); retrying in %.2f s (failure %d of %d)",
                what, describe(exc), wait, failures, policy.attempts,
            )
            time.sleep(wait)
