"""Per-epoch evaluation: each epoch's scores join its losses, and every epoch's are kept."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pit.train.loop import Callback, StageState


class EpochEvaluation(Callback):
    """Scores the model after each epoch and records the epoch's metrics by its number.

    `score` runs every `every`-th epoch and after the last one (`every=0`: the last
    only); other epochs keep their losses only. `history` maps the stage's 1-based epoch to
    that epoch's metrics; it is this callback's state, so a resumed stage
    knows every epoch's numbers without computing them again.
    """

    name = "evaluation"

    def __init__(self, score: Callable[[], dict[str, float]] | None, every: int = 1,
                 last_epoch: int | None = None) -> None:
        self.score = score
        self.every = every
        self.last_epoch = last_epoch
        self.history: dict[int, dict[str, float]] = {}

    @property
    def last(self) -> dict[str, float]:
        return self.history[max(self.history)] if self.history else {}

    def on_epoch_end(self, state: StageState, metrics: dict[str, float]) -> None:
        epoch = state.position.epoch
        due = epoch == self.last_epoch or (self.every > 0 and epoch % self.every == 0)
        if self.score is not None and due:
            metrics.update(self.score())
        self.history[state.position.epoch] = dict(metrics)

    def state_dict(self) -> dict[str, Any]:
        return {"history": {str(k): v for k, v in sorted(self.history.items())}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {int(k): dict(v) for k, v in state.get("history", {}).items()}
