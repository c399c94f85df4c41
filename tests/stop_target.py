"""A toy stage that trains in its own process until it is stopped: the target of signal tests.

Usage: python stop_target.py STORE_DIR RESULT_JSON [STEP_SECONDS]

It trains the toy model of `test_checkpoint` (many epochs, a checkpoint every
3 steps, STEP_SECONDS of sleep after each step so a test can act in between),
with the stop request and the graceful stop callback as a stage runner wires
them. It writes `{"ready": true}` to RESULT_JSON after its first step, then,
when it ends, what happened: the message of TrainingStopped, or "finished".
Exit status 2 on TrainingStopped, as `pit.train.launch` does. Under
`torchrun`, each rank writes RESULT_JSON with its rank appended (`.0`, `.1`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from test_checkpoint import PEAK, TCFG, checkpointer, setup, toy_epochs

from pit.errors import TrainingStopped
from pit.storage import Store
from pit.train.callbacks import GracefulStop
from pit.train.loop import Callback, train_stage
from pit.train.signals import StopRequest


class Pace(Callback):
    def __init__(self, result: Path, seconds: float) -> None:
        self.result, self.seconds = result, seconds

    def on_step_end(self, state, loss, kind, lr) -> None:
        if state.position.step == 1:
            self.result.write_text(json.dumps({"ready": True}))
        time.sleep(self.seconds)


def main() -> int:
    store_dir, result = Path(sys.argv[1]), Path(sys.argv[2])
    if "RANK" in os.environ:
        result = result.with_name(f"{result.name}.{os.environ['RANK']}")
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 0.2
    store = Store(str(store_dir))
    epochs = toy_epochs(n_epochs=40)
    accelerator, model, optimizer = setup()
    request = StopRequest()
    ck = checkpointer(store, accelerator, model, optimizer, epochs, every_steps=3)
    stop = GracefulStop(request, accelerator, ck, "toy stage", sum(len(e) for e in epochs))
    try:
        with request.installed():
            train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer,
                        callbacks=[Pace(result, seconds), ck, stop])
    except TrainingStopped as e:
        result.write_text(json.dumps({"stopped": str(e), "saved": ck.saved}))
        return 2
    result.write_text(json.dumps({"finished": True}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
