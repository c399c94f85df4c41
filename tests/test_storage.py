"""The artifact store, on a local folder and on a real S3 server (moto on 127.0.0.1)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydantic import BaseModel

from pit.errors import StorageError
from pit.storage import MANIFEST, StorageConfig, Store, fingerprint

if TYPE_CHECKING:
    from s3server import S3Server

pytest_plugins = ["s3server"]

FAST = {"max_attempts": 3, "backoff_s": 0.01, "backoff_max_s": 0.05, "connect_timeout_s": 2.0}


def make_output(folder: Path, files: dict[str, bytes] | None = None) -> Path:
    files = files or {
        "model.safetensors": b"w" * 1000,
        "optim/state.pt": b"o" * 300,
        "x.json": b"{}",
    }
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The same behaviour is asked of both backends."""
    if request.param == "local":
        return Store(StorageConfig(root=str(tmp_path / "artifacts")))
    bucket = request.getfixturevalue("s3_bucket")
    return Store(StorageConfig(root=f"{bucket}/runs", **FAST))


# -- plain operations -------------------------------------------------------------------------


def test_bytes_json_listing_and_removal_round_trip(store: Store) -> None:
    store.write_bytes("a/b.bin", b"\x00\x01")
    store.write_json("a/c.json", {"step": 3})
    assert store.read_bytes("a/b.bin") == b"\x00\x01"
    assert store.read_json("a/c.json") == {"step": 3}
    assert store.exists("a/b.bin") and not store.exists("a/missing")
    assert store.ls("a") == ["a/b.bin", "a/c.json"]
    assert store.ls("nothing-here") == []
    with store.open("a/d.txt", "wb") as f:
        f.write(b"streamed")
    with store.open("a/d.txt") as f:
        assert f.read() == b"streamed"
    with pytest.raises(FileNotFoundError, match="a/missing"):
        store.read_bytes("a/missing")
    store.rm("a")
    store.rm("a")
    assert not store.exists("a/b.bin")


def test_a_local_store_needs_no_s3_client(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU node with a minimal image may lack botocore: local misses and reuse still work."""
    import sys

    monkeypatch.setitem(sys.modules, "botocore", None)  # `import botocore` now fails
    store = Store(StorageConfig(root=str(tmp_path / "artifacts")))
    assert store.cached("data/never-built") is None
    with pytest.raises(FileNotFoundError, match="a/missing"):
        store.read_bytes("a/missing")
    store.publish(make_output(tmp_path / "out"), "models/m", {"kind": "model"})
    assert store.cached("models/m")["kind"] == "model"


def test_put_dir_and_get_dir_copy_a_tree(store: Store, tmp_path: Path) -> None:
    src = make_output(tmp_path / "src")
    assert store.put_dir(src, "tree") == ["model.safetensors", "optim/state.pt", "x.json"]
    dest = store.get_dir("tree", tmp_path / "dest")
    assert (dest / "optim/state.pt").read_bytes() == b"o" * 300
    assert (dest / "model.safetensors").read_bytes() == b"w" * 1000


def test_keys_join_and_urls_name_the_backend(tmp_path: Path) -> None:
    assert Store.join("ckpt/", "/step-1", "", "MANIFEST.json") == "ckpt/step-1/MANIFEST.json"
    assert Store(str(tmp_path)).url("k/v") == f"{tmp_path.resolve().as_posix()}/k/v"
    assert Store("s3://bkt/pre/").url("k") == "s3://bkt/pre/k"
    with pytest.raises(ValueError, match="escapes"):
        Store(str(tmp_path)).url("../etc")


def test_endpoint_resolves_like_the_aws_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic:1")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    assert StorageConfig(root="s3://b").resolved_endpoint() == "http://generic:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-only:2")
    assert StorageConfig(root="s3://b").resolved_endpoint() == "http://s3-only:2"
    config = StorageConfig(root="s3://b", endpoint_url="http://field:3")
    assert config.resolved_endpoint() == "http://field:3"
    with pytest.raises(ValueError, match="http://"):
        StorageConfig(root="s3://b", endpoint_url="minio:9000")


# -- atomic publish ---------------------------------------------------------------------------


def test_publish_writes_the_manifest_last(store: Store, tmp_path: Path) -> None:
    seen_complete: list[bool] = []
    src = make_output(tmp_path / "src")
    manifest = store.publish(
        src,
        "ckpt/step-1",
        {"step": 1},
        progress=lambda rel: seen_complete.append(store.is_complete("ckpt/step-1")),
    )
    assert seen_complete == [False, False, False]
    assert store.is_complete("ckpt/step-1")
    stored = store.read_manifest("ckpt/step-1")
    assert stored == manifest
    assert stored["step"] == 1
    assert stored["files"]["optim/state.pt"]["size"] == 300
    assert store.verify("ckpt/step-1", hashes=True)
    assert store.ls("ckpt") == ["ckpt/step-1"]


def test_readers_ignore_an_output_without_manifest(store: Store, tmp_path: Path) -> None:
    store.put_dir(make_output(tmp_path / "src"), "ckpt/step-2")
    assert not store.is_complete("ckpt/step-2")
    assert store.read_manifest("ckpt/step-2") is None
    assert store.cached("ckpt/step-2") is None
    assert store.problems("ckpt/step-2") == [
        f"{store.url('ckpt/step-2')} has no {MANIFEST}, so it was never completely published"
    ]


def test_republishing_replaces_the_old_output_entirely(store: Store, tmp_path: Path) -> None:
    store.publish(make_output(tmp_path / "v1", {"old.bin": b"1", "keep.bin": b"a"}), "out")
    store.publish(make_output(tmp_path / "v2", {"keep.bin": b"bb"}), "out", {"v": 2})
    manifest = store.read_manifest("out")
    base = store.files_key("out", manifest)
    assert sorted(store._files("out")) == sorted(
        [MANIFEST, Store.join(base, "keep.bin")[len("out/"):]])
    assert store.read_file("out", "keep.bin") == b"bb"
    assert manifest["v"] == 2
    with pytest.raises(FileNotFoundError, match="no published file old.bin"):
        store.read_file("out", "old.bin")


def test_staging_publishes_on_clean_exit_and_nothing_on_error(store: Store) -> None:
    meta: dict[str, object] = {"step": 5}
    with store.staging("ckpt/step-5", meta) as folder:
        (folder / "weights.bin").write_bytes(b"123")
        meta["loss"] = 0.5
    assert store.read_manifest("ckpt/step-5")["loss"] == 0.5
    assert store.verify("ckpt/step-5", hashes=True)

    with pytest.raises(RuntimeError, match="preempted"), store.staging("ckpt/step-6") as folder:
        (folder / "weights.bin").write_bytes(b"partial")
        raise RuntimeError("preempted")
    assert not store.exists("ckpt/step-6")
    assert store.ls("ckpt") == ["ckpt/step-5"]
    assert not folder.exists()


def test_verify_detects_a_corrupt_or_missing_file(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store.publish(make_output(tmp_path / "src"), "ckpt/step-3")
    assert store.cached("ckpt/step-3") is not None

    base = store.files_key("ckpt/step-3", store.read_manifest("ckpt/step-3"))
    store.write_bytes(f"{base}/optim/state.pt", b"X" * 300)
    assert store.verify("ckpt/step-3"), "same size passes the cheap check"
    with caplog.at_level(logging.WARNING, logger="pit.storage"):
        assert not store.verify("ckpt/step-3", hashes=True)
    assert "optim/state.pt does not match the sha256" in caplog.text
    assert store.cached("ckpt/step-3", hashes=True) is None

    store.write_bytes(f"{base}/model.safetensors", b"truncated")
    assert any("has 9 bytes, the manifest says 1000" in p for p in store.problems("ckpt/step-3"))
    store.rm(f"{base}/x.json")
    assert any(
        "x.json is listed in the manifest but missing" in p for p in store.problems("ckpt/step-3")
    )
    assert store.cached("ckpt/step-3") is None


def test_local_publish_leaves_no_staging_folders(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "art"))
    store.publish(make_output(tmp_path / "src"), "data/abc")
    store.publish(make_output(tmp_path / "src"), "data/abc")
    assert sorted(p.name for p in (tmp_path / "art" / "data").iterdir()) == ["abc"]


# -- content addressing -----------------------------------------------------------------------


class Inner(BaseModel):
    lr: float = 1e-3
    tracking_uri: str = "sqlite:///a.db"


class Cfg(BaseModel):
    seed: int = 0
    train: Inner = Inner()
    name: str = "demo"


def test_same_config_same_fingerprint_changed_field_new_one() -> None:
    base = fingerprint(Cfg(), inputs={"dataset": "d1"})
    assert base == fingerprint(Cfg(), inputs={"dataset": "d1"})
    assert len(base) == 64
    assert fingerprint(Cfg(seed=1), inputs={"dataset": "d1"}) != base
    assert fingerprint(Cfg(train=Inner(lr=2e-3)), inputs={"dataset": "d1"}) != base
    assert fingerprint(Cfg(), inputs={"dataset": "d2"}) != base
    assert fingerprint(Cfg().model_dump(), inputs={"dataset": "d1"}) == base


def test_excluded_fields_do_not_change_the_fingerprint() -> None:
    ex = ["name", "train.tracking_uri"]
    a = fingerprint(Cfg(), exclude=ex)
    assert a == fingerprint(Cfg(name="other", train=Inner(tracking_uri="http://x")), exclude=ex)
    with pytest.raises(ValueError, match="train.trackinguri"):
        fingerprint(Cfg(), exclude=["train.trackinguri"])


def test_a_finished_output_is_reused(store: Store, tmp_path: Path) -> None:
    key = Store.join("datasets", fingerprint(Cfg())[:16])
    builds = 0
    for _ in range(2):
        if store.cached(key) is None:
            builds += 1
            with store.staging(key, {"config": Cfg().model_dump()}) as folder:
                (folder / "docs.jsonl").write_text("{}\n")
    assert builds == 1


# -- failures of the store --------------------------------------------------------------------


@pytest.mark.integration
def test_missing_bucket_names_the_bucket_and_how_to_create_it(s3_env: S3Server) -> None:
    store = Store(StorageConfig(root="s3://no-such-bucket-pit/runs", **FAST))
    with pytest.raises(StorageError) as err:
        store.exists("x")
    msg = str(err.value)
    assert "bucket 'no-such-bucket-pit' does not exist" in msg
    assert f"aws s3 mb s3://no-such-bucket-pit --endpoint-url {s3_env.endpoint_url}" in msg
    assert "--artifact-root" in msg


@pytest.mark.integration
def test_missing_credentials_name_the_variables_to_set(
    s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    store = Store(StorageConfig(root=s3_bucket, **FAST))
    with pytest.raises(StorageError) as err:
        store.write_bytes("x", b"1")
    msg = str(err.value)
    assert msg.startswith("no AWS credentials found")
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in msg
    assert "AWS_PROFILE" in msg


@pytest.mark.integration
def test_endpoint_down_is_retried_with_backoff_then_fails_clearly(
    s3_env: S3Server,
    dead_s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = dead_s3_endpoint
    monkeypatch.setenv("AWS_ENDPOINT_URL", dead)
    store = Store(StorageConfig(root="s3://bkt/runs", **FAST))
    with caplog.at_level(logging.WARNING, logger="pit.storage"), pytest.raises(StorageError) as err:
        store.read_bytes("x")
    msg = str(err.value)
    assert f"endpoint {dead}" in msg
    assert "failed 3 time(s)" in msg
    assert "Is the S3 endpoint up? Set AWS_ENDPOINT_URL" in msg
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert [r.getMessage().split("(failure ")[1] for r in retries] == ["1 of 3)", "2 of 3)"]


@pytest.mark.integration
def test_server_stopped_during_upload_leaves_no_manifest_and_the_retry_completes(
    own_s3_server: S3Server, s3_env: S3Server, tmp_path: Path
) -> None:
    server = own_s3_server
    bucket = server.create_bucket()
    store = Store(StorageConfig(root=f"s3://{bucket}", endpoint_url=server.endpoint_url, **FAST))
    src = make_output(tmp_path / "src")
    uploaded: list[str] = []

    def outage_after_first_file(rel: str) -> None:
        uploaded.append(rel)
        if len(uploaded) == 1:
            server.stop()

    with pytest.raises(StorageError, match="Is the S3 endpoint up"):
        store.publish(src, "ckpt/step-1", {"step": 1}, progress=outage_after_first_file)
    assert uploaded == ["model.safetensors"]

    server.start()
    assert [f for f in store._files("ckpt/step-1") if f.endswith("/model.safetensors")], \
        "the partial upload is there"
    assert not store.is_complete("ckpt/step-1")
    assert store.cached("ckpt/step-1") is None

    store.publish(src, "ckpt/step-1", {"step": 1})
    assert store.read_manifest("ckpt/step-1")["step"] == 1
    assert store.verify("ckpt/step-1", hashes=True)


@pytest.mark.integration
def test_secrets_never_reach_logs_or_error_messages(
    s3_bucket: str,
    s3_env: S3Server,
    dead_s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    store = Store(StorageConfig(root=s3_bucket, **FAST))
    store.publish(make_output(tmp_path / "src"), "out", {"note": "ok"})
    texts.append(json.dumps(store.read_manifest("out")))
    texts.append(repr(store.config) + repr(store))
    for root in ("s3://no-such-bucket-pit", s3_bucket):
        with pytest.raises(StorageError) as err:
            if root == s3_bucket:
                monkeypatch.setenv("AWS_ENDPOINT_URL", dead_s3_endpoint)
            Store(StorageConfig(root=root, **FAST)).read_bytes("x")
        texts.append(str(err.value) + repr(err.value))
    texts.extend(r.getMessage() for r in caplog.records)
    assert len(texts) > 4
    assert not [t for t in texts if s3_env.secret_key in t]
