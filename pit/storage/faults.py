"""Which storage failures are worth waiting out, and the one retry loop that waits.

Three kinds of failure, one rule (DESIGN.md, "Faults"): transient faults
(connection refused or reset, timeouts, 5xx, throttling) are retried with
exponential backoff and jitter; anything else (a missing key, rejected
credentials, a bug) is raised at once. :func:`is_transient` is that rule,
read off the whole exception chain because s3fs and aiohttp wrap botocore's
errors, and :func:`retry_call` applies it to any callable.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
CREDENTIAL_FIX = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for "
    "temporary credentials), or AWS_PROFILE / storage.profile naming a profile in "
    "~/.aws/credentials"
)
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
REJECTED_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)


def redact(text: str) -> str:
    """`text` with any AWS secret of this environment replaced by `***`."""
    for var in SECRET_ENV_VARS:
        secret = os.environ.get(var)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


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


def client_error(exc: BaseException) -> tuple[str, int]:
    """The S3 error code and HTTP status anywhere in the exception chain, if any."""
    for e in _chain(exc):
        response = getattr(e, "response", None)
        if isinstance(response, dict) and "Error" in response:
            code = str(response["Error"].get("Code", ""))
            status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            return code, status
    return "", 0


def is_transient(exc: BaseException) -> bool:
    """Whether waiting and trying again may succeed (network trouble, overload)."""
    code, status = client_error(exc)
    if code in THROTTLING_CODES or status >= 500 or status == 429:
        return True
    if code:
        return False
    from botocore import exceptions as bce

    transient = (
        bce.EndpointConnectionError,
        bce.ConnectionClosedError,
        bce.ConnectTimeoutError,
        bce.ReadTimeoutError,
        bce.HTTPClientError,
        bce.ResponseStreamingError,
        ConnectionError,
        TimeoutError,
        socket.timeout,
    )
    for e in _chain(exc):
        if isinstance(e, transient):
            return True
        if type(e).__module__.startswith("aiohttp") and (
            "Connect" in type(e).__name__
            or "Disconnect" in type(e).__name__
            or "Payload" in type(e).__name__
        ):
            return True
        if type(e).__name__ == "FSTimeoutError":
            return True
    return False


def missing_credentials(exc: BaseException) -> bool:
    from botocore import exceptions as bce

    return any(
        isinstance(e, (bce.NoCredentialsError, bce.PartialCredentialsError)) for e in _chain(exc)
    )


def short(exc: BaseException) -> str:
    code, _ = client_error(exc)
    name = code or type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else ""
    return redact(f"{name}: {text}" if text else name)[:300]



def retry_call(
    fn: Callable[[], T],
    *,
    what: str,
    attempts: int,
    backoff_s: float,
    backoff_max_s: float,
    transient: Callable[[BaseException], bool] = is_transient,
) -> T:
    """`fn()`, tried up to `attempts` times while it fails transiently; else its exception.

    The wait doubles from `backoff_s` up to `backoff_max_s`, each drawn between
    half and all of that so that many clients hit by one outage do not
    return in step. Each retry is logged with what failed and why.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not transient(exc) or attempt == attempts:
                raise
            delay = min(backoff_s * 2 ** (attempt - 1), backoff_max_s) * random.uniform(0.5, 1.0)
            log.warning(
                "%s failed (%s); retrying in %.2f s (attempt %d of %d)",
                what, short(exc), delay, attempt, attempts,
            )
            time.sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")
