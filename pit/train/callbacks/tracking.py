"""Per-epoch tracking: each epoch's metrics go to the recipe's MLflow run, once."""

from __future__ import annotations

from typing import Any

from pit.tracking import Tracker
from pit.train.loop import Callback, StageState


class EpochTracking(Callback):
    """Logs each epoch's metrics at its comparison-wide step (`offset` + the stage's epoch).

    Beside them go the epoch's speed, `tokens_per_s` and `mfu` (percent of
    the device's peak; see `pit.train.throughput`), measured in this attempt.
    Its state is what it logged, speed left out. Restoring it logs those
    epochs to the run at hand: under the same run `once` skips what is already
    there; under a new run (a comparison started again after it was killed)
    the curve is whole.
    """

    name = "tracking"

    def __init__(self, tracker: Tracker, run_id: str, offset: int) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self.offset = offset
        self.logged: dict[int, dict[str, float]] = {}

    def log(self, epoch: int, metrics: dict[str, float],
            speed: dict[str, float] | None = None) -> None:
        self.tracker.log_metrics(self.run_id, {**metrics, **(speed or {})},
                                 step=self.offset + epoch, once=True)
        self.logged[epoch] = dict(metrics)

    def on_epoch_end(self, state: StageState, metrics: dict[str, float]) -> None:
        self.log(state.position.epoch, metrics, state.throughput)

    def state_dict(self) -> dict[str, Any]:
        return {"logged": {str(k): v for k, v in sorted(self.logged.items())}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for epoch, metrics in sorted((int(k), v) for k, v in state.get("logged", {}).items()):
            self.log(epoch, metrics)


def record_stage(tracker: Tracker, run_id: str, index: int, model_url: str,
                 checkpoints_url: str, details: dict[str, Any]) -> None:
    """What a recipe's run keeps about one of its stages: tags, and a JSON file of details."""
    tracker.set_tags(run_id, {f"pit.stage{index}.model": model_url,
                              f"pit.stage{index}.checkpoints": checkpoints_url})
    tracker.log_dict(run_id, {"stage": index, "model": model_url, **details},
                     f"stages/stage-{index}.json")
