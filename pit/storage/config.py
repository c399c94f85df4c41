"""Where the artifact store lives and how hard pit tries when it misbehaves."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pit.errors import ConfigError

MAX_ATTEMPTS_ENV = "PIT_STORAGE_MAX_ATTEMPTS"
"""Environment variable for `max_attempts` where no config reaches the store (`pit data wiki`)."""


def _env_attempts() -> int:
    raw = os.environ.get(MAX_ATTEMPTS_ENV, "").strip()
    if not raw:
        return 5
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{MAX_ATTEMPTS_ENV}={raw!r} is not a whole number of tries (1 or more)",
                          source="environment")
    return int(raw)


class StorageConfig(BaseModel):
    """Where artifacts live and how hard to try when the store misbehaves.

    There are deliberately no key fields: configs end up in MLflow params and
    Prefect UIs, so credentials stay in the environment where AWS tools look.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    root: str = Field(
        "./pit-runs/artifacts",
        description="Local folder or s3://bucket/prefix under which every output is stored.",
    )
    endpoint_url: str | None = Field(
        None,
        description="S3 endpoint for MinIO or another S3-compatible store. Unset: "
        "AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL, then AWS itself.",
    )
    region: str | None = Field(
        None, description="S3 region. Unset: AWS_REGION / AWS_DEFAULT_REGION or the profile's."
    )
    profile: str | None = Field(
        None, description="Name of an AWS profile to take credentials from. Unset: AWS_PROFILE."
    )
    max_attempts: int = Field(
        default_factory=_env_attempts,
        ge=1,
        description="Tries per operation before giving up on a transient failure (then "
        f"Prefect's task retries take over). Unset: {MAX_ATTEMPTS_ENV}, else 5.",
    )
    backoff_s: float = Field(
        0.5, ge=0, description="Wait before the second try; doubles on each further try."
    )
    backoff_max_s: float = Field(8.0, ge=0, description="Upper bound on one wait between tries.")
    connect_timeout_s: float = Field(5.0, gt=0, description="Seconds to open a connection.")
    read_timeout_s: float = Field(60.0, gt=0, description="Seconds to wait for a response.")
    stale_after_s: float = Field(
        3600.0,
        ge=0,
        description="Age after which an S3 upload that no manifest names (a killed or "
        "superseded publish) is pruned; a live writer's newest object is always younger.",
    )

    @field_validator("root")
    @classmethod
    def _root_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("storage root is empty; give a folder or s3://bucket/prefix")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_http(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError(f"endpoint_url {v!r} must start with http:// or https://")
        return v

    def resolved_endpoint(self) -> str | None:
        """The endpoint S3 requests go to, resolved the way the AWS CLI resolves it."""
        return (
            self.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or None
        )

