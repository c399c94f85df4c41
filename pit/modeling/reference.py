"""Model references: what `model.name_or_path` (with `model.gguf_file`) may name, checked up front.

A reference is one of

* `embedded`: the small model pit builds and pre-trains itself;
* a local folder: `config.json` and safetensors weights as `save_pretrained`
  writes them, or a `.gguf` file inside it named by `model.gguf_file`;
* a `.gguf` file itself (its folder and name are then the two settings);
* a Hugging Face id, `owner/name` (with `model.gguf_file` for a GGUF repo);
* an `s3://bucket/path` URI of such a folder, fetched through the store.

:func:`check_model` answers "will this load?" as far as it can without
reading weights or touching the network, so that a run with a wrong path or
a missing package fails before any work rather than in its first training
task.

:func:`model_identity` names the content a reference points at, so that a
model pit republishes as safetensors gets a key of what it was made from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pit.config import ModelConfig
from pit.errors import ConfigError, ModelNotFoundError
from pit.modeling.gguf import require_gguf

SAFETENSORS = ("model.safetensors", "model.safetensors.index.json")


@dataclass(frozen=True)
class ModelRef:
    """Where a model is (`location`: folder, Hub id or s3 URI) and which GGUF file in it, if any."""

    kind: Literal["folder", "hub", "s3"]
    location: str
    gguf_file: str | None = None


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _one_gguf(named: str, gguf_file: str | None) -> str:
    if gguf_file and gguf_file != named:
        raise ConfigError(
            [f"model.name_or_path names the GGUF file {named!r} but model.gguf_file says "
             f"{gguf_file!r}; set model.gguf_file only when model.name_or_path is a folder"],
            source="model config",
        )
    return named


def parse_model_ref(name_or_path: str, gguf_file: str | None = None) -> ModelRef:
    """What a reference names; raises :class:`ModelNotFoundError` if it can name nothing."""
    if name_or_path.startswith(("s3://", "s3a://")):
        if not urlsplit(name_or_path).netloc:
            raise ModelNotFoundError(
                f"model {name_or_path!r} names no bucket; use s3://bucket/path/to/model-folder"
            )
        location = name_or_path.rstrip("/")
        if location.endswith(".gguf"):
            location, named = location.rsplit("/", 1)
            return ModelRef("s3", location, _one_gguf(named, gguf_file))
        return ModelRef("s3", location, gguf_file)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        if path.suffix == ".gguf":
            return ModelRef("folder", str(path.parent), _one_gguf(path.name, gguf_file))
        raise ModelNotFoundError(
            f"model path {name_or_path} is a file; pass the folder that holds config.json "
            "(and model.safetensors or a .gguf file with model.gguf_file), or a .gguf file"
        )
    if path.is_dir():
        return ModelRef("folder", str(path), gguf_file)
    if _is_hub_id(name_or_path):
        return ModelRef("hub", name_or_path, gguf_file)
    raise ModelNotFoundError(
        f"model {name_or_path!r} not found: no such folder, and not a Hugging Face id "
        "(owner/name) or an s3:// URI. Check the path, or use model.name_or_path=embedded."
    )


def saved_from_gguf(ref: ModelRef) -> bool:
    """Whether a folder is a model pit saved (safetensors) though the config names a GGUF file.

    Every stage of a recipe that starts from a GGUF model writes such a
    folder; it loads as safetensors, whatever `model.gguf_file` says.
    """
    folder = Path(ref.location)
    return (
        ref.kind == "folder"
        and ref.gguf_file is not None
        and not (folder / ref.gguf_file).is_file()
        and (folder / "config.json").is_file()
    )


def check_folder(ref: ModelRef) -> None:
    """Raise :class:`ModelNotFoundError` unless a model folder holds what loading reads."""
    folder = Path(ref.location)
    ggufs = sorted(p.name for p in folder.glob("*.gguf"))
    if ref.gguf_file:
        if not (folder / ref.gguf_file).is_file():
            there = f"the GGUF files there: {', '.join(ggufs)}" if ggufs else "it holds none"
            raise ModelNotFoundError(
                f"cannot load model {ref.location!r}: model.gguf_file {ref.gguf_file!r} is not "
                f"in that folder ({there}). Set model.gguf_file to one of its .gguf files."
            )
        return
    if not (folder / "config.json").is_file():
        hint = (f"It holds the GGUF file(s) {', '.join(ggufs)}: set model.gguf_file={ggufs[0]} "
                "or pass the .gguf file itself." if ggufs else
                "Pass the folder that save_pretrained wrote.")
        raise ModelNotFoundError(
            f"cannot load model {ref.location!r}: the folder has no config.json. {hint}"
        )
    if not any((folder / name).is_file() for name in SAFETENSORS):
        raise ModelNotFoundError(
            f"cannot load model {ref.location!r}: the folder has no file named "
            "model.safetensors. pit loads safetensors weights only (a pickled "
            "pytorch_model.bin can run code when loaded): convert it to safetensors, by "
            "loading it once where you trust its source and saving it with "
            "save_pretrained(folder), which writes model.safetensors."
        )


def check_model(cfg: ModelConfig) -> None:
    """Fail now, with the fix, if `cfg` names a model that cannot load; reads no weights.

    Checks that a folder or file exists and holds config.json and safetensors
    (or the named GGUF file), that a Hub id has the `owner/name` shape and
    an s3 URI a bucket, and that the `gguf` package is importable when a
    GGUF file is named. Whether a Hub id or an s3 folder exists is left to
    loading, since answering it takes the network and credentials.
    """
    if cfg.name_or_path == "embedded":
        if cfg.gguf_file:
            raise ConfigError(
                [f"model.gguf_file={cfg.gguf_file!r} is set but model.name_or_path is "
                 "'embedded'; set model.name_or_path to the folder that holds the GGUF file"],
                source="model config",
            )
        return
    ref = parse_model_ref(cfg.name_or_path, cfg.gguf_file)
    if ref.gguf_file:
        require_gguf(ref.gguf_file)
    if ref.kind == "folder":
        check_folder(ref)



_NEVER_READ = (".gguf", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")


def _read_by_loading(rel: str, gguf_file: str | None) -> bool:
    """Whether loading reads this file of a model folder: the GGUF file, or the safetensors set."""
    if gguf_file:
        return rel == gguf_file
    top_level = "/" not in rel
    return top_level and not rel.startswith(".") and rel != "MANIFEST.json" \
        and not rel.endswith(_NEVER_READ)


def model_identity(ref: ModelRef) -> dict[str, Any]:
    """The content a reference names: its files and their sha256 where they can be known.

    A local folder or file is hashed (about a second per GB, once per
    comparison: less than loading it). An s3 folder published by pit is
    named by the sha256s its manifest lists, one read; one uploaded by hand
    by its file sizes, all a listing gives. A Hugging Face id is named by
    the id alone, since nothing can be asked of the Hub offline: download
    it into a folder to pin what pit trains on.
    """
    if saved_from_gguf(ref):
        ref = ModelRef(ref.kind, ref.location)
    if ref.kind == "hub":
        return {"hub": ref.location, "gguf_file": ref.gguf_file}
    from pit.storage import MANIFEST, Store, file_sha256

    if ref.kind == "folder":
        folder = Path(ref.location)
        files = sorted(p.name for p in folder.iterdir() if p.is_file())
        return {"files": {rel: file_sha256(folder / rel) for rel in files
                          if _read_by_loading(rel, ref.gguf_file)}}
    store = Store(ref.location)
    manifest = store.read_manifest("")
    if manifest is not None:
        return {"files": {rel: entry["sha256"] for rel, entry in manifest["files"].items()
                          if _read_by_loading(rel, ref.gguf_file)}}
    listed = store._files("")
    if not listed:
        raise ModelNotFoundError(
            f"model {ref.location!r} not found: nothing is stored under it. Check the URI "
            f"(a folder holding config.json and model.safetensors, or {MANIFEST})."
        )
    return {"sizes": {rel: size for rel, size in listed.items()
                      if _read_by_loading(rel, ref.gguf_file)}}
