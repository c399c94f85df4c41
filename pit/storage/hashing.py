"""Content addressing: a key carries a hash of what produced the output.

An output's key holds :func:`fingerprint` of its config and its inputs, so
the same work lands on the same key and a changed field on a new one; a
finished output found there is reused (marin's steps work the same way).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(_jsonable(v) for v in obj)
    if isinstance(obj, Path):
        return obj.as_posix()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise TypeError(f"cannot fingerprint a {type(obj).__name__}; pass plain data or a model")


def _drop(data: Any, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"fingerprint exclude {dotted!r} names no field of the config")
        node = node[part]
    if not isinstance(node, dict) or leaf not in node:
        raise ValueError(f"fingerprint exclude {dotted!r} names no field of the config")
    del node[leaf]


def fingerprint(
    config: Any,
    *,
    exclude: Iterable[str] = (),
    inputs: Mapping[str, str] | Iterable[str] = (),
) -> str:
    """sha256 (hex) of a config and the fingerprints of the outputs it reads.

    The *whole* config enters the hash unless a field is listed in `exclude`
    (dotted paths such as `"tracking.uri"`), the opposite of opting fields in:
    forgetting to list a field then costs a recomputation, never a stale
    reuse. An `exclude` that names no field raises, since it is most likely a
    typo that silently keeps the field in. Named `inputs` are hashed by name,
    unnamed ones in the order given, because stage order matters.
    """
    data = _jsonable(config)
    for dotted in exclude:
        _drop(data, dotted)
    ins: Any = (
        {str(k): str(v) for k, v in inputs.items()}
        if isinstance(inputs, Mapping)
        else [str(v) for v in inputs]
    )
    payload = json.dumps(
        {"config": data, "inputs": ins},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a local file, read in chunks so multi-GB weights fit in memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
