"""Stopping at a step boundary with a checkpoint, when the training process is asked to stop."""

from __future__ import annotations

from pit.errors import TrainingStopped
from pit.train.checkpoint import Checkpointer, step_of
from pit.train.loop import Callback, StageState
from pit.train.signals import StopRequest


class GracefulStop(Callback):
    """After each step, if a stop was requested: checkpoint the step, raise TrainingStopped.

    It runs after the `checkpointer` (which may have saved this very step).
    With several processes they agree first (any one asked means all stop),
    since saving a checkpoint is a collective step every process must take.
    """

    name = "stopping"

    def __init__(self, request: StopRequest, accelerator, checkpointer: Checkpointer | None,
                 where: str, total_steps: int) -> None:
        self.request = request
        self.accelerator = accelerator
        self.checkpointer = checkpointer
        self.where = where
        self.total_steps = total_steps

    def _agreed(self) -> bool:
        if self.accelerator.num_processes == 1:
            return self.request.requested
        import torch

        flag = torch.tensor([1.0 if self.request.requested else 0.0],
                            device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def on_step_end(self, state: StageState, loss: float, kind: str, lr: float) -> None:
        if not self._agreed():
            return
        step = state.position.step
        reason = self.request.reason or "a stop request of another process"
        head = f"{self.where} stopped on {reason} after step {step} of {self.total_steps}"
        ck = self.checkpointer
        if ck is None:
            raise TrainingStopped(f"{head}; checkpoints are off (checkpoint.enabled=false), "
                                  "so running the same command again trains the stage anew")
        key = ck.saved[-1] if ck.saved and step_of(ck.saved[-1]) == step else ck.save(state)
        raise TrainingStopped(f"{head}; checkpoint {ck.store.url(key)} holds it: run the same "
                              "command again to resume from there")
