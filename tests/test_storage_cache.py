"""Local copies of published outputs: fetched once, verified, refreshed when stale or damaged.

Remote cases run against moto's S3 server on 127.0.0.1 (see `s3server.py`).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from pit.storage import MANIFEST, MARKER, CorruptOutputError, StorageConfig, Store, file_sha256

pytest_plugins = ["s3server"]

FAST = {"max_attempts": 2, "backoff_s": 0.01, "backoff_max_s": 0.02}


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def publish(store: Store, tmp_path: Path, key: str, files: dict[str, bytes]) -> dict:
    src = tmp_path / f"src-{len(list(tmp_path.glob('src-*')))}"
    return store.publish(write_files(src, files), key)


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in (MANIFEST, MARKER)}


def siblings(dest: Path) -> list[str]:
    """Names next to a cached copy that a fetch in flight would leave behind (not its lock)."""
    return sorted(p.name for p in dest.parent.iterdir()
                  if p.name not in (dest.name, f".{dest.name}.lock"))


def copies(folder: Path) -> list[Path]:
    """The cached copies in a cache folder, without their lock files."""
    return sorted(p for p in folder.iterdir() if not p.name.endswith(".lock"))


V1 = {"model.safetensors": b"w" * 4000, "tokenizer/vocab.json": b'{"a": 1}', "config.json": b"{}"}
V2 = {"model.safetensors": b"v" * 5000, "config.json": b'{"v": 2}'}


@pytest.fixture
def remote(s3_bucket: str) -> Store:
    return Store(StorageConfig(root=f"{s3_bucket}/runs", **FAST))


def test_a_local_store_returns_the_output_folder_itself(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    publish(store, tmp_path, "datasets/x", V1)
    assert store.fetch_dir("datasets/x", tmp_path / "cache") == tmp_path / "store/datasets/x"
    assert not (tmp_path / "cache").exists()
    store.write_bytes("datasets/half/a.bin", b"1")
    with pytest.raises(FileNotFoundError, match="datasets/half has no MANIFEST.json"):
        store.fetch_dir("datasets/half", tmp_path / "cache")


@pytest.mark.integration
def test_a_remote_output_is_downloaded_once_and_then_reused(remote: Store, tmp_path: Path) -> None:
    publish(remote, tmp_path, "datasets/x", V1)
    folder = remote.fetch_dir("datasets/x", tmp_path / "cache")
    assert folder == tmp_path / "cache/datasets/x"
    assert contents(folder) == V1
    published = remote.read_manifest("datasets/x")
    assert json.loads((folder / MANIFEST).read_text()) == {
        k: v for k, v in published.items() if k != "root"}, "the copy's files lie at its top"
    # With the data objects gone from the bucket, only a reused copy can still be returned.
    for rel in V1:
        remote.rm(f"{remote.files_key('datasets/x', published)}/{rel}")
    assert remote.fetch_dir("datasets/x", tmp_path / "cache") == folder
    assert contents(folder) == V1
    assert siblings(folder) == []


@pytest.mark.integration
def test_a_damaged_cached_file_is_fetched_again(
        remote: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    publish(remote, tmp_path, "ckpt/step-1", V1)
    folder = remote.fetch_dir("ckpt/step-1", tmp_path / "cache")
    weights = folder / "model.safetensors"
    damaged = bytearray(weights.read_bytes())
    damaged[100] ^= 0xFF  # same size: only the sha256 tells
    weights.write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING, logger="pit.storage"):
        again = remote.fetch_dir("ckpt/step-1", tmp_path / "cache")
    assert again == folder and contents(again) == V1
    assert "model.safetensors does not match its size or sha256" in caplog.text
    assert siblings(folder) == []


@pytest.mark.integration
def test_a_republished_key_is_fetched_again(remote: Store, tmp_path: Path) -> None:
    publish(remote, tmp_path, "models/base", V1)
    folder = remote.fetch_dir("models/base", tmp_path / "cache")
    assert contents(folder) == V1
    publish(remote, tmp_path, "models/base", V2)
    again = remote.fetch_dir("models/base", tmp_path / "cache")
    assert again == folder
    assert contents(again) == V2
    marker = json.loads((again / MARKER).read_text())
    assert marker["source"] == remote.url("models/base")
    assert siblings(folder) == []


@pytest.mark.integration
def test_a_download_that_does_not_match_the_manifest_is_refused_and_left_nowhere(
        remote: Store, tmp_path: Path, s3_env) -> None:
    manifest = publish(remote, tmp_path, "datasets/x", V1)
    bucket, prefix = remote.root.removeprefix("s3://").split("/", 1)
    files = remote.files_key("datasets/x", manifest)
    s3_env.client().put_object(Bucket=bucket, Key=f"{prefix}/{files}/model.safetensors",
                               Body=b"X" * 4000)  # same size, other bytes
    with pytest.raises(CorruptOutputError) as err:
        remote.fetch_dir("datasets/x", tmp_path / "cache")
    assert err.value.problems == ["model.safetensors does not match its size or sha256"]
    assert "Publish it again" in str(err.value)
    assert copies(tmp_path / "cache/datasets") == []


@pytest.mark.integration
@pytest.mark.parametrize("stale", [False, True], ids=["empty-cache", "stale-copy"])
def test_concurrent_fetches_of_one_key_each_end_with_a_complete_verified_copy(
        s3_bucket: str, tmp_path: Path, stale: bool) -> None:
    root = f"{s3_bucket}/runs"
    big = {f"shard-{i}.bin": bytes([i]) * 200_000 for i in range(6)}
    store = Store(StorageConfig(root=root, **FAST))
    if stale:
        publish(store, tmp_path, "models/m", V1)
        store.fetch_dir("models/m", tmp_path / "cache")
    manifest = publish(store, tmp_path, "models/m", big)
    barrier = threading.Barrier(4)
    results: list[Path] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        own = Store(StorageConfig(root=root, **FAST))  # one client each, like separate processes
        barrier.wait()
        try:
            results.append(own.fetch_dir("models/m", tmp_path / "cache"))
        except BaseException as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    dest = tmp_path / "cache/models/m"
    assert results == [dest] * 4
    assert contents(dest) == big
    assert all(file_sha256(dest / rel) == e["sha256"] for rel, e in manifest["files"].items())
    assert siblings(dest) == []


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pit.config import ModelConfig
    from pit.modeling import build_embedded_model, save_model, train_tokenizer

    tok = train_tokenizer(["Question: who directed it? Answer: Ventura Pons"], 120)
    cfg = ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    return save_model(build_embedded_model(cfg, tok), tok, tmp_path_factory.mktemp("tiny"))


@pytest.mark.integration
def test_a_model_published_to_s3_loads_through_one_verified_copy(
        s3_bucket: str, tiny_model: Path, tmp_path: Path) -> None:
    from pit.modeling import load_model

    store = Store(StorageConfig(root=f"{s3_bucket}/models", **FAST))
    store.publish(tiny_model, "tiny")
    model, tok = load_model(f"{s3_bucket}/models/tiny", cache_dir=tmp_path / "models")
    found = copies(tmp_path / "models")
    assert len(found) == 1 and contents(found[0]) == contents(tiny_model)
    assert json.loads((found[0] / MARKER).read_text())["source"] == f"{s3_bucket}/models/tiny"
    again, _ = load_model(f"{s3_bucket}/models/tiny", cache_dir=tmp_path / "models")
    assert copies(tmp_path / "models") == found
    assert all(p.equal(q) for p, q in zip(model.parameters(), again.parameters(), strict=True))


@pytest.mark.integration
def test_a_model_uploaded_by_hand_loads_with_a_warning(
        s3_bucket: str, tiny_model: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    from pit.modeling import load_model

    Store(StorageConfig(root=f"{s3_bucket}/models", **FAST)).put_dir(tiny_model, "by-hand")
    with caplog.at_level(logging.WARNING, logger="pit.storage"):
        _, tok = load_model(f"{s3_bucket}/models/by-hand", cache_dir=tmp_path / "models")
    assert f"model {s3_bucket}/models/by-hand has no MANIFEST.json; downloading it unverified" \
        in caplog.text
    assert tok.eos_token == "<eos>"
