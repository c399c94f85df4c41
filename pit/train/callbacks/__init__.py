"""What hooks into a stage's training loop, one file each: evaluation, tracking, checkpoints."""

from pit.train.callbacks.checkpointing import Checkpointing, restore
from pit.train.callbacks.evaluation import EpochEvaluation
from pit.train.callbacks.tracking import EpochTracking

__all__ = ["Checkpointing", "EpochEvaluation", "EpochTracking", "restore"]
