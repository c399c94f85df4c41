"""What the store promises under faults: flipped bits caught, killed writers harmless, no mixing.

Every case runs against real files and moto's S3 server on 127.0.0.1; writers
that get killed are real processes, killed with SIGKILL half way through.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pit.errors import CorruptOutputError
from pit.storage import MANIFEST, StorageConfig, Store
from pit.storage.manifest import is_publication

if TYPE_CHECKING:
    from s3server import S3Server

pytest_plugins = ["s3server"]

FAST = {"max_attempts": 2, "backoff_s": 0.01, "backoff_max_s": 0.02}
ROOT = Path(__file__).resolve().parents[1]


def write_files(folder: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def contents(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST and not p.name.startswith(".pit-")}


def s3_location(store: Store, key: str) -> tuple[str, str]:
    bucket, _, prefix = store.root.removeprefix("s3://").partition("/")
    return bucket, f"{prefix}/{key}".lstrip("/")


def flip_one_byte(store: Store, key: str, rel: str, s3: S3Server | None) -> None:
    """Flip one bit of a stored file behind pit's back, keeping its size (bit rot)."""
    manifest = store.read_manifest(key)
    stored = store.join(store.files_key(key, manifest), rel)
    if s3 is None:
        with open(store.url(stored), "r+b") as f:
            f.seek(manifest["files"][rel]["size"] // 2)
            byte = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([byte[0] ^ 0x10]))
        return
    bucket, object_key = s3_location(store, stored)
    body = bytearray(s3.client().get_object(Bucket=bucket, Key=object_key)["Body"].read())
    body[len(body) // 2] ^= 0x10
    s3.client().put_object(Bucket=bucket, Key=object_key, Body=bytes(body))


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, S3Server | None]:
    """A store root and, for S3, the server behind it."""
    if request.param == "local":
        return str(tmp_path / "artifacts"), None
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/pit", request.getfixturevalue("s3_env")


# -- a flipped bit is caught on read ----------------------------------------------------------


def test_a_flipped_byte_in_a_stored_dataset_is_caught_on_read_naming_the_file(
        backend: tuple[str, S3Server | None], tmp_path: Path, tiny_overrides: list[str]) -> None:
    from pit import pipeline
    from pit.config_sources import load_config

    root, s3 = backend
    cfg = load_config("smoke", None, [*tiny_overrides, f"workdir={tmp_path}",
                                      f"storage.root={root}", "storage.max_attempts=2"])
    key = pipeline.build_dataset(cfg)
    store = Store(cfg.storage)
    files = store.read_manifest(key)["files"]
    biggest = max(files, key=lambda rel: files[rel]["size"])
    flip_one_byte(store, key, biggest, s3)

    assert store.cached(key) is not None, "same size: the cheap check at reuse cannot tell"
    with pytest.raises(CorruptOutputError) as err:
        pipeline.load_dataset(cfg, key)
    assert f"{biggest} does not match its size or sha256" in str(err.value)
    assert store.url(key) in str(err.value)


def test_a_flipped_byte_in_a_stored_model_is_caught_on_read_naming_the_file(
        backend: tuple[str, S3Server | None], tmp_path: Path) -> None:
    from pit.artifacts import model_path
    from pit.config import ModelConfig
    from pit.config_sources import load_config
    from pit.modeling import build_embedded_model, save_model, train_tokenizer

    root, s3 = backend
    cfg = load_config("smoke", None, [f"workdir={tmp_path}", f"storage.root={root}"])
    tok = train_tokenizer(["Question: who directed it? Answer: Ventura Pons"], 120)
    small = ModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    folder = save_model(build_embedded_model(small, tok), tok, tmp_path / "model")
    store = Store(cfg.storage)
    store.publish(folder, "models/tiny")
    assert Path(model_path(cfg, "models/tiny")).is_dir(), "intact, it reads"

    flip_one_byte(store, "models/tiny", "model.safetensors", s3)
    cache = tmp_path / "cache"
    if cache.exists():  # the S3 read above left a verified copy; a new machine has none
        import shutil

        shutil.rmtree(cache)
    with pytest.raises(CorruptOutputError, match="model.safetensors does not match its size"):
        model_path(cfg, "models/tiny")


# -- a writer killed half way -----------------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from pit.storage import StorageConfig, Store

root, key, src, flag, how = sys.argv[1:6]
store = Store(StorageConfig(root=root, max_attempts=2, backoff_s=0.01))

def pause(rel):
    Path(flag).write_text(rel)
    time.sleep(600)

if how == "publish":
    store.publish(src, key, {"step": 2}, progress=pause)
else:  # staging: killed while writing its files, as a training process saving a checkpoint
    with store.staging(key, {"step": 2}) as folder:
        (folder / "model.safetensors").write_bytes(b"n" * 4000)
        pause("model.safetensors")
"""


def start_writer(root: str, key: str, src: Path, flag: Path, how: str,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, root, key, str(src), str(flag), how],
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not flag.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the writer never got half way: {proc.communicate()[0]!r}")
        time.sleep(0.02)
    return proc


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def local_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def publications(store: Store, key: str) -> list[str]:
    return sorted({rel.split("/", 1)[0] for rel in store._files(key)
                   if is_publication(rel.split("/", 1)[0])})


V1 = {"model.safetensors": b"o" * 4000, "optimizer.safetensors": b"p" * 3000, "state.json": b"{}"}
V2 = {"model.safetensors": b"n" * 4000, "optimizer.safetensors": b"q" * 3000,
      "state.json": b'{"v": 2}'}


@pytest.mark.parametrize("how", ["publish", "staging"])
def test_a_local_writer_killed_half_way_leaves_nothing_trusted_and_the_next_publish_prunes_it(
        tmp_path: Path, how: str) -> None:
    store = Store(StorageConfig(root=str(tmp_path / "art"), **FAST))
    store.publish(write_files(tmp_path / "v1", V1), "ckpt/step-2", {"step": 1})
    flag = tmp_path / "half-way"
    writer = start_writer(store.root, "ckpt/step-2", write_files(tmp_path / "v2", V2), flag, how)

    # While the writer lives, its working folder is its own: a publish beside it keeps it.
    store.publish(write_files(tmp_path / "other", {"a": b"1"}), "ckpt/step-1")
    assert len(local_leftovers(tmp_path / "art/ckpt")) == 1
    kill(writer)

    leftover = tmp_path / "art/ckpt" / local_leftovers(tmp_path / "art/ckpt")[0]
    assert [p for p in leftover.iterdir() if p.name in V2], "a partial copy is left"
    assert not (leftover / MANIFEST).exists()
    assert store.read_manifest("ckpt/step-2")["step"] == 1
    assert contents(store.fetch_dir("ckpt/step-2", tmp_path / "cache")) == V1
    assert store.ls("ckpt") == ["ckpt/step-1", "ckpt/step-2"]

    store.publish(write_files(tmp_path / "v3", {"a": b"3"}), "ckpt/step-3")
    assert local_leftovers(tmp_path / "art/ckpt") == []
    assert store.verify("ckpt/step-2", hashes=True)


@pytest.mark.integration
@pytest.mark.parametrize("how", ["publish", "staging"])
def test_an_s3_writer_killed_half_way_leaves_nothing_trusted_and_a_later_publish_prunes_it(
        s3_bucket: str, tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    root = f"{s3_bucket}/art"
    store = Store(StorageConfig(root=root, **FAST))
    store.publish(write_files(tmp_path / "v1", V1), "ckpt/step-2", {"step": 1})
    first = publications(store, "ckpt/step-2")
    flag = tmp_path / "half-way"
    writer = start_writer(root, "ckpt/step-2", write_files(tmp_path / "v2", V2), flag, how,
                          env={"TMPDIR": str(tmp_path / "tmp")})
    if how == "publish":
        # Uploading: its first file is in the bucket under a folder no manifest names.
        deadline = time.monotonic() + 30
        while len(publications(store, "ckpt/step-2")) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    kill(writer)
    staged = sorted((tmp_path / "tmp").glob("pit-staging-*/*"))

    assert store.read_manifest("ckpt/step-2")["step"] == 1
    assert store.verify("ckpt/step-2", hashes=True)
    assert contents(store.fetch_dir("ckpt/step-2", tmp_path / "cache")) == V1
    if how == "publish":
        orphan = [p for p in publications(store, "ckpt/step-2") if p not in first]
        assert len(orphan) == 1, "the killed upload left a folder no manifest names"
    else:
        assert len(staged) == 1 and (staged[0] / "model.safetensors").is_file()

    # The next run publishes the same checkpoint again. A young folder no manifest names
    # might be a live writer's, so it stays until it is older than storage.stale_after_s.
    store.publish(write_files(tmp_path / "v3", V2), "ckpt/step-2", {"step": 2})
    assert store.read_manifest("ckpt/step-2")["step"] == 2
    if how == "publish":
        assert set(orphan) <= set(publications(store, "ckpt/step-2"))
        time.sleep(1.5)
        patient = Store(StorageConfig(root=root, stale_after_s=1.0, **FAST))
        patient.publish(write_files(tmp_path / "v4", V2), "ckpt/step-2", {"step": 2})
    else:
        with store.staging("ckpt/step-4") as folder:
            (folder / "a").write_bytes(b"4")
    assert len(publications(store, "ckpt/step-2")) == 1
    assert sorted((tmp_path / "tmp").glob("pit-staging-*/*")) == []
    assert contents(store.fetch_dir("ckpt/step-2", tmp_path / "cache")) == V2


# -- two writers of one key -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["local", pytest.param("s3", marks=pytest.mark.integration)])
def test_two_writers_of_one_key_never_mix_their_files(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    root = (str(tmp_path / "art") if kind == "local"
            else f"{request.getfixturevalue('s3_bucket')}/art")
    names = [f"shard-{i}.bin" for i in range(5)]
    sources = {w: write_files(tmp_path / w, {n: w.encode() * (1000 + i) for i, n in
                                             enumerate(names)}) for w in "AB"}
    a_done = threading.Event()
    errors: list[BaseException] = []

    def write(who: str) -> None:
        store = Store(StorageConfig(root=root, **FAST))  # one client each, like two processes

        def interleave(rel: str) -> None:
            time.sleep(0.03)
            if who == "B" and rel == names[-1]:
                a_done.wait(30)  # B finishes last: its manifest wins

        try:
            store.publish(sources[who], "stages/s0", {"writer": who}, progress=interleave)
        except BaseException as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)
        finally:
            if who == "A":
                a_done.set()

    threads = [threading.Thread(target=write, args=(w,)) for w in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = Store(StorageConfig(root=root, **FAST))
    assert store.read_manifest("stages/s0")["writer"] == "B"
    assert store.problems("stages/s0", hashes=True) == []
    assert contents(store.fetch_dir("stages/s0", tmp_path / "cache")) == contents(sources["B"])
    if kind == "s3":
        assert len(publications(store, "stages/s0")) == 1, "the replaced upload is removed"
    else:
        assert local_leftovers(tmp_path / "art/stages") == []


# -- the download cache under several processes -----------------------------------------------

READER = """
import logging, sys
from pit.storage import StorageConfig, Store

logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
root, endpoint, cache, attempts = sys.argv[1:5]
store = Store(StorageConfig(root=root, endpoint_url=endpoint, max_attempts=int(attempts),
                            backoff_s=0.05, backoff_max_s=0.2))
print("FOLDER", store.fetch_dir("models/m", cache), flush=True)
"""


def start_reader(root: str, endpoint: str, cache: Path, attempts: int = 2) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", READER, root, endpoint, str(cache), str(attempts)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)


BIG = {f"shard-{i}.bin": bytes([i]) * 300_000 for i in range(6)}


@pytest.mark.integration
def test_processes_fetching_one_key_download_it_once_between_them(
        s3_bucket: str, s3_env: S3Server, tmp_path: Path) -> None:
    root = f"{s3_bucket}/runs"
    Store(StorageConfig(root=root, **FAST)).publish(write_files(tmp_path / "src", BIG), "models/m")
    readers = [start_reader(root, s3_env.endpoint_url, tmp_path / "cache") for _ in range(3)]
    outputs = [r.communicate(timeout=120)[0] for r in readers]
    assert [r.returncode for r in readers] == [0, 0, 0], outputs
    dest = tmp_path / "cache/models/m"
    assert all(f"FOLDER {dest}" in out for out in outputs)
    assert sum(out.count("downloading 6 file(s)") for out in outputs) == 1, outputs
    assert contents(dest) == BIG


@pytest.mark.integration
def test_a_fetch_killed_mid_download_leaves_no_copy_and_the_next_fetch_prunes_its_folder(
        s3_bucket: str, s3_env: S3Server, tmp_path: Path) -> None:
    root = f"{s3_bucket}/runs"
    store = Store(StorageConfig(root=root, **FAST))
    big = {f"shard-{i}.bin": bytes([i]) * 3_000_000 for i in range(10)}
    store.publish(write_files(tmp_path / "src", big), "models/m")
    cache = tmp_path / "cache"
    reader = start_reader(root, s3_env.endpoint_url, cache)
    deadline = time.monotonic() + 120
    while not list(cache.glob("models/m.tmp-*/shard-*")):
        assert reader.poll() is None and time.monotonic() < deadline, reader.communicate()[0]
        time.sleep(0.002)
    kill(reader)

    assert not (cache / "models/m").exists(), "no copy that looks complete"
    assert len(list(cache.glob("models/m.tmp-*"))) == 1
    folder = store.fetch_dir("models/m", cache)
    assert contents(folder) == big
    assert sorted(p.name for p in (cache / "models").iterdir()) == [".m.lock", "m"]
    marker = json.loads((folder / ".pit-fetched.json").read_text())
    assert marker["source"] == store.url("models/m")
