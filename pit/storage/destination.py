"""The folder a user names with `--out`, and when pit may replace it.

Publishing swaps a whole folder into place (see `pit.storage.store`), so
whatever was in it before is gone. That is right for an output pit published
earlier (its `MANIFEST.json` lists every file in it) and wrong for anything
else: a user's folder, a folder where someone added notes beside an output,
the current or the home directory, or the current directory reached by an
empty `--out "$OUT"`. So a destination is accepted when it does not exist, is
empty, or holds exactly what its manifest lists; anything else needs
`--overwrite`; and the current directory, home and the folders above them are
refused always.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pit.errors import UnsafeOutputError
from pit.storage.config import StorageConfig
from pit.storage.manifest import MANIFEST, is_publication
from pit.storage.store import Store

_SHOWN = 5


def store_and_key(out: str, storage: StorageConfig | None = None) -> tuple[Store, str]:
    """The storage root holding `out` and the key of `out` under it.

    `storage` lends its settings (endpoint, retries) to that store; its own
    root is not used.
    """
    out = out.rstrip("/")
    if "://" in out:
        root, key = out.rsplit("/", 1)
    else:
        path = Path(out).expanduser().resolve()
        root, key = str(path.parent), path.name
    return Store((storage or StorageConfig()).model_copy(update={"root": root})), key


def _always_refused(out: str) -> str | None:
    """Why `out` may never be published to, whatever the flags say."""
    if not out.strip():
        return (
            "--out is empty (an unset variable, as in --out \"$OUT\"?); an empty path would "
            "mean the current directory. Name the folder to publish to."
        )
    if "://" in out and not out.startswith("file://"):
        parts = urlsplit(out)
        if not parts.netloc or not parts.path.strip("/"):
            return (
                f"--out {out} is a bucket root; give a prefix under it, e.g. "
                f"{parts.scheme}://{parts.netloc or 'bucket'}/datasets/films"
            )
        return None
    path = Path(out.removeprefix("file://")).expanduser().resolve()
    places = (("the current directory", Path.cwd().resolve()),
              ("your home directory", Path.home().resolve()))
    found = [name for name, place in places if path == place] + [
        f"a folder above {name} ({place})" for name, place in places if path in place.parents
    ]
    if not found:
        return None
    return (
        f"--out {out} is {found[0]}: publishing replaces the whole folder, so everything in it "
        "would be lost. Name a new folder for the output, e.g. --out ./films (--overwrite does "
        "not lift this)."
    )


def foreign_files(store: Store, key: str) -> list[str]:
    """Files at `key` that its manifest does not list (all of them when it has none), sorted.

    The publication folders of an S3 output (`.pit-*`, see `store.py`) are
    pit's own, whichever publication they hold.
    """
    if store.is_local and not Path(store.url(key)).is_dir():
        return []
    manifest = store.read_manifest(key)
    listed = set(manifest["files"]) | {MANIFEST} if manifest is not None else set()
    return sorted(rel for rel in set(store._files(key)) - listed
                  if not is_publication(rel.split("/", 1)[0]))


def destination_problem(out: str, *, overwrite: bool, flag: str = "--overwrite",
                        storage: StorageConfig | None = None) -> str | None:
    """Why publishing to `out` would lose what pit did not write, or None when it is safe.

    `flag` is how the caller's user says "replace it anyway" (a CLI flag, a
    flow parameter), so the message names the fix they can type.
    """
    refused = _always_refused(out)
    if refused is not None or overwrite:
        return refused
    fix = f"Choose a new or empty folder, or pass {flag} to replace it anyway."
    store, key = store_and_key(out.removeprefix("file://"), storage)
    if store.is_local and Path(store.url(key)).is_file():
        return f"--out {out} is a file, not a folder; publishing would replace it. {fix}"
    found = foreign_files(store, key)
    if not found:
        return None
    shown = ", ".join(found[:_SHOWN])
    if len(found) > _SHOWN:
        shown += f" and {len(found) - _SHOWN} more"
    why = (
        f"files its {MANIFEST} does not list ({shown})"
        if store.read_manifest(key) is not None
        else f"files but no {MANIFEST}, so pit did not publish it ({shown})"
    )
    return (
        f"--out {out} holds {why}; publishing replaces the whole folder, so they would be "
        f"lost. {fix}"
    )


def check_destination(out: str, *, overwrite: bool, flag: str = "--overwrite",
                      storage: StorageConfig | None = None) -> None:
    """Raise :class:`~pit.errors.UnsafeOutputError` when publishing to `out` is not safe."""
    problem = destination_problem(out, overwrite=overwrite, flag=flag, storage=storage)
    if problem is not None:
        raise UnsafeOutputError(problem)
