"""One retry rule: transient faults retried by pit, then by Prefect; bad input and bugs never.

The faults are real ones: a refused connection, moto's S3 server with no such
bucket, a write to /dev/full (ENOSPC), a tensor shape mismatch, tasks run by
Prefect's test harness. Also here: every storage setting that a message tells
users to set exists and works, concurrent MLflow experiment creation, and a
tracking URI's password kept off the terminal.
"""

from __future__ import annotations

import errno
import logging
import re
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prefect import flow, task
from typer.testing import CliRunner

from pit.errors import (
    ConfigError,
    CorruptOutputError,
    DataError,
    StorageError,
    StorageUnavailableError,
    TransientError,
    UnsafeOutputError,
)
from pit.retry import RetryPolicy, is_transient, retry
from pit.storage import StorageConfig, Store
from pit.storage.config import MAX_ATTEMPTS_ENV
from pit.storage.destination import check_destination
from tasks.retries import retry_if_transient

if TYPE_CHECKING:
    from s3server import S3Server

pytest_plugins = ["s3server"]

FAST = {"max_attempts": 2, "backoff_s": 0.01, "backoff_max_s": 0.02}
ROOT = Path(__file__).resolve().parents[1]


def raised(fn) -> BaseException:  # noqa: ANN001 - any callable
    try:
        fn()
    except BaseException as e:  # noqa: BLE001 - returned for the caller to judge
        return e
    raise AssertionError("expected an exception")


def refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    socket.create_connection(("127.0.0.1", port), timeout=2)


def disk_full() -> None:
    with open("/dev/full", "wb", buffering=0) as f:
        f.write(b"x" * 4096)


def shape_mismatch() -> None:
    import torch

    torch.zeros(2, 3) @ torch.zeros(2, 3)


def bad_input_over_a_dropped_connection() -> None:
    try:
        refused()
    except ConnectionError as e:
        raise DataError("the dump at http://mirror/x is not a bz2 file") from e


def test_transient_faults_are_told_from_bad_input_bugs_and_a_full_disk(tmp_path: Path) -> None:
    from pit.storage import fingerprint

    transient = [raised(refused), TransientError("mirror still down")]
    not_transient = [
        raised(disk_full),
        raised(shape_mismatch),
        raised(lambda: fingerprint(object())),  # a TypeError
        raised(bad_input_over_a_dropped_connection),
        raised(lambda: check_destination(".", overwrite=True)),
        ConfigError(["train.doc_lr must be > 0"]),
        CorruptOutputError("s3://b/k", ["model.safetensors does not match its size or sha256"]),
    ]
    assert isinstance(not_transient[0], OSError) and not_transient[0].errno == errno.ENOSPC
    assert isinstance(not_transient[4], UnsafeOutputError)
    assert [is_transient(e) for e in transient] == [True, True]
    assert [is_transient(e) for e in not_transient] == [False] * len(not_transient)


def test_retry_waits_out_a_transient_fault_and_raises_anything_else_at_once() -> None:
    calls: list[str] = []
    policy = RetryPolicy(attempts=4, backoff_s=0.001, backoff_max_s=0.002)

    def flaky() -> str:
        calls.append("flaky")
        if len(calls) < 3:
            refused()
        return "done"

    assert retry(flaky, what="flaky call", policy=policy) == "done"
    assert len(calls) == 3
    for fault in (disk_full, shape_mismatch):
        calls.clear()

        def once(fault=fault) -> None:  # noqa: ANN001 - the fault under test
            calls.append("once")
            fault()

        with pytest.raises((OSError, RuntimeError)):
            retry(once, what="call", policy=policy)
        assert calls == ["once"]


@pytest.mark.integration
def test_a_full_disk_is_not_retried_by_the_store(
        s3_bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(StorageConfig(root=s3_bucket, max_attempts=5, backoff_s=0.01))
    store.write_bytes("weights.bin", b"w" * 100_000)
    full = tmp_path / "full-disk"
    full.symlink_to("/dev/full")
    with caplog.at_level(logging.WARNING, logger="pit"), pytest.raises(StorageError) as err:
        store.get_file("weights.bin", full)
    assert "No space left on device" in str(err.value)
    assert not isinstance(err.value, TransientError)
    assert "retrying" not in caplog.text


@pytest.mark.integration
def test_an_outage_past_the_budget_is_transient_and_a_missing_bucket_is_not(
        s3_env: S3Server, dead_s3_endpoint: str) -> None:
    down = Store(StorageConfig(root="s3://bkt/runs", endpoint_url=dead_s3_endpoint, **FAST))
    outage = raised(lambda: down.read_bytes("x"))
    assert isinstance(outage, StorageUnavailableError) and is_transient(outage)
    missing = raised(lambda: Store(StorageConfig(root="s3://no-such-bucket-pit", **FAST))
                     .read_bytes("x"))
    assert isinstance(missing, StorageError) and not is_transient(missing)


# -- Prefect takes over where pit's retries stop ---------------------------------------------


def task_runs(state) -> int:  # noqa: ANN001 - a Prefect State
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_task_run(state.state_details.task_run_id).run_count


@pytest.mark.integration
def test_prefect_retries_a_store_outage_but_not_a_missing_bucket(
        prefect_harness: None, s3_env: S3Server, dead_s3_endpoint: str, tmp_path: Path,
        tiny_overrides: list[str]) -> None:
    from pit.config_sources import load_config
    from tasks.training import build_dataset

    @flow(name="dataset-only")
    def dataset_only(cfg):  # noqa: ANN001, ANN202 - a PitConfig in, its task's State out
        return (build_dataset(cfg, return_state=True),)

    def config(root: str, endpoint: str) -> object:
        return load_config("smoke", None, [
            *tiny_overrides, f"workdir={tmp_path}", f"storage.root={root}",
            f"storage.endpoint_url={endpoint}", "storage.max_attempts=1"])

    (outage,) = dataset_only(config("s3://bkt/pit", dead_s3_endpoint))
    assert outage.is_failed() and task_runs(outage) == 3
    assert isinstance(raised(outage.result), StorageUnavailableError)

    (missing,) = dataset_only(config("s3://no-such-bucket-pit/pit", s3_env.endpoint_url))
    assert missing.is_failed() and task_runs(missing) == 1
    assert "does not exist" in str(raised(missing.result))


@pytest.mark.integration
def test_prefect_never_retries_bad_dump_input_or_a_bug(
        prefect_harness: None, tmp_path: Path) -> None:
    from pit.wiki.params import BuildDatasetParams
    from tasks.wiki import fetch_dump

    attempts: list[int] = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_if_transient)
    def flaky_then_fine() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            refused()
        return "ok"

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_if_transient)
    def buggy() -> None:
        shape_mismatch()

    @flow(name="retry-rule")
    def run(params):  # noqa: ANN001, ANN202
        return (fetch_dump(params, return_state=True), flaky_then_fine(return_state=True),
                buggy(return_state=True))

    params = BuildDatasetParams(dump=str(tmp_path / "no-mirror"), category="x",
                                out=str(tmp_path / "out"))
    bad_dump, flaky, bug = run(params)
    assert bad_dump.is_failed() and task_runs(bad_dump) == 1
    assert isinstance(raised(bad_dump.result), DataError)
    assert flaky.is_completed() and task_runs(flaky) == 2
    assert bug.is_failed() and task_runs(bug) == 1


# -- the storage settings messages name ------------------------------------------------------


def test_every_storage_setting_a_message_names_exists() -> None:
    import ast

    named: set[str] = set()
    for path in [*(ROOT / "pit").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named |= set(re.findall(r"(?<![\w.])storage\.([a-z_]+)", node.value))
    assert {"max_attempts", "endpoint_url", "root"} <= named, "the messages name settings"
    assert named <= set(StorageConfig.model_fields), named - set(StorageConfig.model_fields)


@pytest.mark.integration
def test_the_retry_budget_is_set_where_the_message_says(
        s3_env: S3Server, dead_s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from pit.cli import app

    monkeypatch.setenv("AWS_ENDPOINT_URL", dead_s3_endpoint)
    out = CliRunner().invoke(app, ["data", "synth", "--out", "s3://bkt/films",
                                   "--set", "storage.max_attempts=2",
                                   "--set", "storage.backoff_s=0.01"])
    said = " ".join(out.output.split())
    assert out.exit_code == 2, out.output
    assert "failed 2 time(s)" in said
    assert f"storage.max_attempts (or {MAX_ATTEMPTS_ENV}) sets how many tries" in said

    monkeypatch.setenv(MAX_ATTEMPTS_ENV, "3")
    assert StorageConfig().max_attempts == 3
    out = CliRunner().invoke(app, ["data", "synth", "--out", "s3://bkt/films",
                                   "--set", "storage.backoff_s=0.01"])
    assert out.exit_code == 2 and "failed 3 time(s)" in " ".join(out.output.split()), out.output

    monkeypatch.setenv(MAX_ATTEMPTS_ENV, "many")
    with pytest.raises(ConfigError, match=f"{MAX_ATTEMPTS_ENV}='many' is not a whole number"):
        StorageConfig()


# -- MLflow and the terminal -----------------------------------------------------------------


@pytest.mark.integration
def test_runs_that_create_one_experiment_at_once_all_succeed(mlflow_server) -> None:  # noqa: ANN001
    from mlflow.tracking import MlflowClient

    from pit.tracking import Tracker

    name = f"race-{threading.get_ident()}-{id(mlflow_server)}"
    barrier = threading.Barrier(6)
    ids: list[str] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait()
        try:
            ids.append(Tracker(mlflow_server.url, name).experiment_id)
        except BaseException as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(ids)) == 1 and len(ids) == 6
    assert MlflowClient(mlflow_server.url).get_experiment_by_name(name).experiment_id == ids[0]


def test_a_password_in_a_uri_is_masked() -> None:
    from pit.cli import masked_uri

    assert masked_uri("http://pit:hunter2@mlflow:5000/x") == "http://pit:***@mlflow:5000/x"
    assert masked_uri("API request to postgresql://u:p%40ss@db/mlflow failed") == \
        "API request to postgresql://u:***@db/mlflow failed"
    assert masked_uri("sqlite:////work/mlflow.db") == "sqlite:////work/mlflow.db"


@pytest.mark.slow
@pytest.mark.integration
def test_compare_never_prints_the_tracking_password(
        mlflow_server, prefect_harness: None, tmp_path: Path,  # noqa: ANN001
        tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    from pit.cli import app

    secret = "hunter2-pit-secret"
    uri = mlflow_server.url.replace("http://", f"http://pit:{secret}@")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    args = ["compare", "--preset", "smoke", "--methods", "closed-book",
            "--set", f"workdir={tmp_path}", "--set", "tracking.experiment=masked"]
    for o in tiny_overrides:
        args += ["--set", o]
    out = CliRunner().invoke(app, args)
    printed = out.output + "".join(capfd.readouterr())
    assert out.exit_code == 0, printed
    assert secret not in printed
    assert "pit:***@127.0.0.1" in printed
