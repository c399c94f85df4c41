"""A real S3 endpoint for tests: moto's server on 127.0.0.1, as s3fs's own tests use.

moto keeps its buckets in this process's memory, not in the server thread, so
stopping the server and starting a new one on the same port is a genuine
outage (connections are refused) that ends with the data still there, the way
a restarted MinIO keeps its disk.

Load it as a plugin, `pytest_plugins = ["s3server"]` in `tests/conftest.py`, and
ask for the fixtures by name; import `S3Server` under `TYPE_CHECKING` only, so
this module is first imported by pytest (which then rewrites its asserts).
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

SECRET_MARKER = "pit-test-secret-7f3c9e1d"
"""The secret key the test environment uses; tests assert it is never printed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """A moto S3 server that can be stopped and restarted on the same port."""

    secret_key = SECRET_MARKER

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self._server: ThreadedMotoServer | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> S3Server:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        server.start()
        self.port = server.get_host_and_port()[1]
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self):  # noqa: ANN201 - boto3 clients have no importable static type
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key=SECRET_MARKER,
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique one unless named) and return its name."""
        name = name or f"pit-test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One moto S3 server for the whole session; tests isolate by bucket."""
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Server:
    """AWS environment variables pointing at the test server, and nothing else.

    Shared config files and instance metadata are switched off so that a
    developer's ~/.aws never leaks into a test (or makes a missing-credentials
    test pass by accident).
    """
    for var in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_ENDPOINT_URL_S3",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_MARKER)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    return s3_server


@pytest.fixture
def s3_bucket(s3_env: S3Server) -> str:
    """A fresh, empty bucket on the test server; returns `s3://<name>`."""
    return f"s3://{s3_env.create_bucket()}"


@pytest.fixture
def own_s3_server() -> Iterator[S3Server]:
    """A server of the test's own, for tests that stop and restart it."""
    server = S3Server().start()
    yield server
    server.stop()


@pytest.fixture
def dead_s3_endpoint() -> str:
    """An http URL on 127.0.0.1 where nothing listens: connections are refused."""
    return f"http://127.0.0.1:{free_port()}"
