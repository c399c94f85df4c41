"""The checkpoint callback: when to save (the policy of `Checkpointer`), and what besides.

A checkpoint holds, beside the weights, optimiser, RNG states and data
position of `pit.train.checkpoint`, the state of every callback of the
stage (`callbacks.json`: each `state_dict` under the callback's `name`), so
a resumed stage continues with the metrics it had recorded and logged, as
OLMo-core's callbacks do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pit.storage import Store
from pit.train.checkpoint import (
    Checkpointer,
    _rng_state,
    checkpoint_key,
    fetch_latest,
    list_checkpoints,
    read_checkpoint,
    write_checkpoint,
)
from pit.train.loop import Callback, StageState

CALLBACKS_FILE = "callbacks.json"


class Checkpointing(Checkpointer):
    """Publishes checkpoints on `Checkpointer`'s schedule, each with its callbacks' states."""

    name = "checkpointing"

    def __init__(self, *args: Any, callbacks: Sequence[Callback] = (), **kwargs: Any) -> None:
        super().__init__(*args, history={}, **kwargs)
        self.callbacks = list(callbacks)

    def states(self) -> dict[str, dict[str, Any]]:
        return {cb.name: cb.state_dict() for cb in self.callbacks}

    def save(self, state: StageState) -> str:
        """Publish the stage as it stands; returns the checkpoint's key."""
        from accelerate.utils import gather_object

        started = time.perf_counter()
        rng_states = gather_object([_rng_state()])
        key = checkpoint_key(self.prefix, state.position.step)
        if self.accelerator.is_main_process:
            states = self.states()
            history = states.get("evaluation", {}).get("history", {})
            manifest = {"kind": "checkpoint", "fingerprint": self.fingerprint,
                        "step": state.position.step, "epoch": state.position.epoch,
                        "batch": state.position.batch}
            with self.store.staging(key, manifest) as folder:
                write_checkpoint(folder, model=self.accelerator.unwrap_model(self.model),
                                 optimizer=self.optimizer, state=state,
                                 history={int(k): v for k, v in history.items()},
                                 rng_states=rng_states, fingerprint=self.fingerprint,
                                 tokenizer=self.tokenizer)
                (folder / CALLBACKS_FILE).write_text(json.dumps(states, sort_keys=True))
            self.prune()
            if self.on_saved is not None:
                self.on_saved(key)
        self.accelerator.wait_for_everyone()
        self.seconds.append(time.perf_counter() - started)
        self.saved.append(key)
        return key


def restore(store: Store, prefix: str, fingerprint: str, cache: Path, accelerator, model,
            optimizer, callbacks: Sequence[Callback]) -> StageState | None:
    """Restore the newest intact checkpoint in place, callbacks included; None if there is none.

    The main process picks and fetches it; the others read the same folder.
    """
    folder: str | None = None
    if accelerator.is_main_process:
        found = fetch_latest(store, prefix, fingerprint, cache)
        folder = None if found is None else str(found[1])
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        box = [folder]
        broadcast_object_list(box, from_process=0)
        folder = box[0]
    if folder is None:
        return None
    state, _ = read_checkpoint(Path(folder), model=accelerator.unwrap_model(model),
                               optimizer=optimizer, rank=accelerator.process_index)
    saved = Path(folder) / CALLBACKS_FILE
    states = json.loads(saved.read_text()) if saved.is_file() else {}
    for cb in callbacks:
        cb.load_state_dict(states.get(cb.name, {}))
    return state


def kept(store: Store, prefix: str) -> list[str]:
    """URLs of the complete checkpoints under `prefix`, oldest first."""
    return [store.url(k) for k in list_checkpoints(store, prefix) if store.is_complete(k)]
