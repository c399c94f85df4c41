"""How the store words its failures: which credentials to set, with every secret scrubbed.

Which failures are worth waiting out, and the waiting itself, are pit's one
rule for every network client (`pit.retry`); this module holds only what is
particular to S3: the credential errors that name the variables to set, and
the scrubbing of secret keys from any text a backend echoes back.
"""

from __future__ import annotations

import os

from pit.retry import exception_chain, service_error

SECRET_ENV_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
CREDENTIAL_FIX = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for "
    "temporary credentials), or AWS_PROFILE / storage.profile naming a profile in "
    "~/.aws/credentials"
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


def missing_credentials(exc: BaseException) -> bool:
    """Whether S3 refused `exc` for want of credentials; never, where botocore is absent.

    A machine that only ever writes to local folders may lack the S3 client
    (a GPU node with a minimal image): its local cache misses must not fail here.
    """
    try:
        from botocore import exceptions as bce
    except ImportError:
        return False

    missing = (bce.NoCredentialsError, bce.PartialCredentialsError)
    return any(isinstance(e, missing) for e in exception_chain(exc))


def short(exc: BaseException) -> str:
    """`Code: first line` of a storage failure, scrubbed of secrets, for one log line."""
    code, _ = service_error(exc)
    name = code or type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else ""
    return redact(f"{name}: {text}" if text else name)[:300]
