"""Checkpoints of a training stage in the artifact store, and the newest intact one to resume.

A checkpoint is a published output of the store (see `pit.storage`), so it is
complete exactly when its `MANIFEST.json` exists; the manifest is written
last, after every file. It holds all a stage needs to continue as if it had
never stopped:

    step-000000120/
      model/            save_pretrained, safetensors: loadable as a model on its own
      optimizer.safetensors   AdamW moments and step counts, one tensor per entry
      optimizer.json          the rest of the optimiser state (param groups)
      rng.safetensors         torch (and CUDA) generator states of every process
      state.json              data position, partial-epoch losses, per-epoch metrics,
                              python and numpy RNG states, the stage fingerprint
      callbacks.json          each callback's `state_dict`, under the callback's `name`

Everything is safetensors or JSON: no pickle is ever loaded, so a checkpoint
from a shared bucket cannot run code. The learning-rate schedule is a
function of the step (`cosine_factor`), so the step is the scheduler state,
and the batch plan of every epoch is rebuilt from seeds, so (epoch, batch) is
the data position. Callbacks keep their own state (OLMo-core's callbacks do
the same), so a resumed stage continues with the metrics it had recorded and
logged.

A stage's checkpoints live under one prefix that carries a hash of what the
stage computes (config, recipe, stage, input model, data): a retry finds its
own checkpoints and never a different stage's. The newest is taken unless it
has no manifest or a file fails its size or sha256, in which case it is
skipped with a warning and the one before it is used.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from pit.config import CheckpointConfig
from pit.storage import MANIFEST, CorruptOutputError, Store
from pit.train.loop import Callback, Position, StageState

log = logging.getLogger(__name__)

_STEP_PREFIX = "step-"
CALLBACKS_FILE = "callbacks.json"


def checkpoint_key(prefix: str, step: int) -> str:
    """Key of the checkpoint after `step` optimiser steps; zero-padded so names sort by step."""
    return Store.join(prefix, f"{_STEP_PREFIX}{step:09d}")


def step_of(key: str) -> int | None:
    name = key.rstrip("/").rsplit("/", 1)[-1]
    if not name.startswith(_STEP_PREFIX) or not name[len(_STEP_PREFIX) :].isdigit():
        return None
    return int(name[len(_STEP_PREFIX) :])


def list_checkpoints(store: Store, prefix: str) -> list[str]:
    """Every checkpoint folder under `prefix`, complete or not, oldest first."""
    keys = [k for k in store.ls(prefix) if step_of(k) is not None]
    return sorted(keys, key=lambda k: step_of(k) or 0)


@dataclass
class Checkpoint:
    """A complete checkpoint: its key, the step it was taken after, its manifest."""

    key: str
    step: int
    manifest: dict[str, Any]


@dataclass
class Resumed:
    """What a stage continues from: the restored position and the metrics of past epochs."""

    checkpoint: Checkpoint
    state: StageState
    history: dict[int, dict[str, float]] = field(default_factory=dict)


def _candidates(store: Store, prefix: str, fingerprint: str | None) -> list[Checkpoint]:
    """Checkpoints with a manifest (and the right fingerprint), newest first.

    Those without a manifest were never completely published (the writer died
    or the store failed mid-upload); they are named in a warning so an
    operator sees why an older step was used.
    """
    found = []
    for key in reversed(list_checkpoints(store, prefix)):
        manifest = store.read_manifest(key)
        if manifest is None:
            log.warning("skipping checkpoint %s: it has no %s (never completely published)",
                        store.url(key), MANIFEST)
            continue
        if fingerprint is not None and manifest.get("fingerprint") != fingerprint:
            log.warning("skipping checkpoint %s: it belongs to a different stage configuration",
                        store.url(key))
            continue
        found.append(Checkpoint(key, int(manifest.get("step", step_of(key) or 0)), manifest))
    return found


def latest_checkpoint(
    store: Store, prefix: str, *, fingerprint: str | None = None, hashes: bool = True
) -> Checkpoint | None:
    """The newest intact checkpoint under `prefix`, or None.

    Skipped, each with a warning: folders without a manifest, checkpoints of
    another fingerprint (when one is given), and those whose files do not
    match their manifest (sizes always; sha256 too with `hashes`, which reads
    every file back).
    """
    for ckpt in _candidates(store, prefix, fingerprint):
        if store.verify(ckpt.key, hashes=hashes):
            return ckpt
        log.warning("skipping checkpoint %s: its files do not match its manifest",
                    store.url(ckpt.key))
    return None


def fetch_latest(
    store: Store, prefix: str, fingerprint: str | None, cache_dir: Path
) -> tuple[Checkpoint, Path] | None:
    """The newest intact checkpoint, as a local folder verified file by file against its sha256.

    Unlike :func:`latest_checkpoint` with `hashes`, each file is read once:
    :meth:`Store.fetch_dir` checks a remote checkpoint as it copies it into
    `cache_dir`, and a local one where it lies.
    """
    for ckpt in _candidates(store, prefix, fingerprint):
        if not store.verify(ckpt.key):
            log.warning("skipping checkpoint %s: its files do not match its manifest",
                        store.url(ckpt.key))
            continue
        try:
            return ckpt, store.fetch_dir(ckpt.key, cache_dir)
        except CorruptOutputError as e:
            log.warning("skipping corrupt checkpoint %s: %s; using the one before it",
                        store.url(ckpt.key), "; ".join(e.problems))
        except FileNotFoundError:
            log.warning("checkpoint %s went away while it was read (pruned by a run sharing "
                        "the store); using the one before it", store.url(ckpt.key))
    return None


# -- what goes into a checkpoint -------------------------------------------------------------


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                rest.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "state": rest}


def _unflatten_optimizer(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], current: dict[str, Any]
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta["state"].items():
        state.setdefault(int(idx), {}).update(entry)
    groups = []
    for saved, now in zip(meta["param_groups"], current["param_groups"], strict=True):
        # JSON turns tuples (AdamW's betas) into lists; give them back their type.
        groups.append({k: tuple(v) if isinstance(now.get(k), tuple) else v
                       for k, v in saved.items()})
    return {"state": state, "param_groups": groups}


def _rng_state() -> dict[str, Any]:
    """This process's generator states: torch CPU and CUDA as tensors, the rest as JSON."""
    import numpy as np

    np_state = np.random.get_state()
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    tensors["numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    py = random.getstate()
    return {
        "tensors": tensors,
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    import numpy as np

    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[f"cuda.{i}"] for i in range(len(tensors)) if f"cuda.{i}" in tensors]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    version, keys, gauss = meta["python"]
    random.setstate((version, tuple(keys), gauss))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss,
                         cached))


def _load_weights(model: torch.nn.Module, folder: Path) -> None:
    """Load safetensors weights in place, so the optimiser keeps pointing at the parameters.

    `save_pretrained` leaves out tied copies (the output head that shares the
    embedding); a missing key is accepted only if it shares storage with a
    loaded one.
    """
    weights: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(path))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    params = dict(model.state_dict(keep_vars=True))
    loaded_ptrs = {params[k].data_ptr() for k in weights if k in params}
    untied = [k for k in missing if params[k].data_ptr() not in loaded_ptrs]
    if untied or unexpected:
        raise RuntimeError(
            f"checkpoint weights in {folder} do not fit the model: missing {untied[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )


def write_checkpoint(
    folder: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: StageState,
    history: dict[int, dict[str, float]],
    rng_states: Sequence[dict[str, Any]],
    fingerprint: str,
    tokenizer: Any = None,
    callbacks: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Write a checkpoint's files into a local folder (the store publishes the folder).

    `callbacks` maps each callback's name to its `state_dict`.
    """
    model.save_pretrained(folder / "model", safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder / "model")
    tensors, meta = _flatten_optimizer(optimizer.state_dict())
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(json.dumps(meta))
    rng_tensors = {f"rank{r}.{k}": v.contiguous() for r, s in enumerate(rng_states)
                   for k, v in s["tensors"].items()}
    save_file(rng_tensors, str(folder / "rng.safetensors"))
    doc = {
        "position": vars(state.position),
        "epoch_losses": state.epoch_losses,
        "history": {str(k): v for k, v in sorted(history.items())},
        "rng": [{"python": s["python"], "numpy": s["numpy"]} for s in rng_states],
        "fingerprint": fingerprint,
    }
    (folder / "state.json").write_text(json.dumps(doc, indent=1))
    (folder / CALLBACKS_FILE).write_text(json.dumps(dict(callbacks or {}), sort_keys=True))


def read_checkpoint(
    folder: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rank: int = 0,
    callbacks: Sequence[Callback] = (),
) -> tuple[StageState, dict[int, dict[str, float]]]:
    """Restore weights, optimiser, this rank's RNG states and `callbacks` in place.

    Returns the data position and the per-epoch metrics of `state.json`.
    Each callback gets the state saved under its name (an empty one if none
    was). With fewer saved ranks than now (the stage was resumed on more
    processes), the last saved rank's generators are reused.
    """
    _load_weights(model, folder / "model")
    tensors = load_file(str(folder / "optimizer.safetensors"))
    meta = json.loads((folder / "optimizer.json").read_text())
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta, optimizer.state_dict()))
    doc = json.loads((folder / "state.json").read_text())
    saved = len(doc["rng"])
    r = min(rank, saved - 1)
    rng = load_file(str(folder / "rng.safetensors"))
    mine = {k.split(".", 1)[1]: v for k, v in rng.items() if k.startswith(f"rank{r}.")}
    _set_rng_state(mine, doc["rng"][r])
    state = StageState(Position(**doc["position"]),
                       {k: list(v) for k, v in doc["epoch_losses"].items()})
    history = {int(k): v for k, v in doc["history"].items()}
    saved_callbacks = folder / CALLBACKS_FILE
    states = json.loads(saved_callbacks.read_text()) if saved_callbacks.is_file() else {}
    for cb in callbacks:
        cb.load_state_dict(states.get(cb.name, {}))
    return state, history


# -- the callback ----------------------------------------------------------------------------


class Checkpointer(Callback):
    """Publishes a checkpoint every `every_steps` steps and at each epoch end but the last.

    The last epoch needs none: the stage's final model is published right
    after it, and a retry that finds that output reuses it. Checkpoints are
    taken after the epoch's evaluation (the callback runs after it), so the
    per-epoch metrics so far travel with the weights.

    Every process takes part (its RNG states are gathered); only the main one
    writes, publishes and prunes. `callbacks` are the stage's other
    callbacks: each checkpoint holds their states. `history` is per-epoch
    metrics kept outside any callback (a stage runner's are its evaluation
    callback's state).
    """

    name = "checkpointing"

    def __init__(
        self,
        store: Store,
        prefix: str,
        cfg: CheckpointConfig,
        *,
        accelerator: Any,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        epoch_sizes: Sequence[int],
        fingerprint: str,
        history: dict[int, dict[str, float]] | None = None,
        tokenizer: Any = None,
        on_saved: Callable[[str], None] | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.cfg = cfg
        self.accelerator = accelerator
        self.model = model
        self.optimizer = optimizer
        self.epoch_sizes = list(epoch_sizes)
        self.fingerprint = fingerprint
        self.history = {} if history is None else history
        self.tokenizer = tokenizer
        self.callbacks = list(callbacks)
        self.on_saved = on_saved
        self.seconds: list[float] = []
        self.saved: list[str] = []

    def on_step_end(self, state: StageState, loss: float, kind: str, lr: float) -> None:
        pos = state.position
        every = self.cfg.every_steps
        if not every or pos.step % every:
            return
        epoch_done = pos.batch >= self.epoch_sizes[pos.epoch]
        if epoch_done and (self.cfg.at_epoch_end or pos.epoch == len(self.epoch_sizes) - 1):
            return
        self.save(state)

    def on_epoch_end(self, state: StageState, metrics: dict[str, float]) -> None:
        if self.cfg.at_epoch_end and state.position.epoch < len(self.epoch_sizes):
            self.save(state)

    def save(self, state: StageState) -> str:
        """Publish the stage as it stands; returns the checkpoint's key."""
        from accelerate.utils import gather_object

        started = time.perf_counter()
        rng_states = gather_object([_rng_state()])
        key = checkpoint_key(self.prefix, state.position.step)
        if self.accelerator.is_main_process:
            manifest = {"kind": "checkpoint", "fingerprint": self.fingerprint,
                        "step": state.position.step, "epoch": state.position.epoch,
                        "batch": state.position.batch}
            with self.store.staging(key, manifest) as folder:
                write_checkpoint(folder, model=self.accelerator.unwrap_model(self.model),
                                 optimizer=self.optimizer, state=state, history=self.history,
                                 rng_states=rng_states, fingerprint=self.fingerprint,
                                 tokenizer=self.tokenizer,
                                 callbacks={cb.name: cb.state_dict() for cb in self.callbacks})
            self.prune()
            if self.on_saved is not None:
                self.on_saved(key)
        self.accelerator.wait_for_everyone()
        self.seconds.append(time.perf_counter() - started)
        self.saved.append(key)
        return key

    def prune(self) -> list[str]:
        """Delete all but the newest `keep_last` complete checkpoints; returns what was deleted.

        The manifest goes first, so a reader never trusts a folder whose files
        are half deleted.
        """
        keys = list_checkpoints(self.store, self.prefix)
        complete = [k for k in keys if self.store.is_complete(k)]
        if len(complete) <= self.cfg.keep_last:
            return []
        oldest_kept = step_of(complete[-self.cfg.keep_last]) or 0
        doomed = [k for k in keys if (step_of(k) or 0) < oldest_kept]
        for key in doomed:
            self.store.rm(Store.join(key, MANIFEST))
            self.store.rm(key)
        return doomed

    def kept(self) -> list[str]:
        """URLs of the complete checkpoints now in the store, oldest first."""
        return [self.store.url(k) for k in list_checkpoints(self.store, self.prefix)
                if self.store.is_complete(k)]
