"""Checkpoints in a stage runner: restoring the newest one, callbacks included, and listing them.

Taking them is `pit.train.checkpoint.Checkpointer`, a callback whose
checkpoints hold the state of every other callback of the stage; here a
resumed stage gets those states back, so it continues with the metrics it
had recorded and logged, as OLMo-core's callbacks do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pit.storage import Store
from pit.train.checkpoint import fetch_latest, list_checkpoints, read_checkpoint
from pit.train.loop import Callback, StageState


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
                               optimizer=optimizer, rank=accelerator.process_index,
                               callbacks=callbacks)
    return state


def kept(store: Store, prefix: str) -> list[str]:
    """URLs of the complete checkpoints under `prefix`, oldest first."""
    return [store.url(k) for k in list_checkpoints(store, prefix) if store.is_complete(k)]
