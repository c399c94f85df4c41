"""What hooks into a stage's training loop, one file each: evaluation, tracking, stopping."""

from pit.train.callbacks.checkpointing import kept, restore
from pit.train.callbacks.evaluation import EpochEvaluation
from pit.train.callbacks.stopping import GracefulStop
from pit.train.callbacks.tracking import EpochTracking
from pit.train.checkpoint import Checkpointer

__all__ = ["Checkpointer", "EpochEvaluation", "EpochTracking", "GracefulStop", "kept", "restore"]
