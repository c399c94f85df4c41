"""Each process's share of a global batch, weighed so the shares add up to the whole.

With several processes (DDP or FSDP through accelerate), a batch of the
stage's plan is the global batch: every process builds the same plan from
the same seeds and takes a contiguous slice of it, its rows when packed,
its examples when padded.

    batch of 5 rows     r0 r1 r2 | r3 r4        2 processes
    process 0           r0 r1 r2
    process 1                      r3 r4

The loss of a batch is a weighted mean over tokens, so the slices cannot
each take their own mean: a slice of short QA answers would weigh as much
as a slice of whole documents. Each process divides its weighted sum by the
weight sum of the *whole* batch (`loss_weight`, known from the plan without
any communication) and multiplies by the number of processes, which DDP and
FSDP divide the summed gradients by. The gradient is then exactly that of
the global batch in one process, up to the order of floating-point sums.

A batch with fewer rows (or examples) than processes leaves some without a
slice; such a process runs the batch's first row with a loss weight of 0,
because DDP needs every process in every backward pass.
"""

from __future__ import annotations

from dataclasses import replace

from pit.train.batches import Batch


def loss_weight(batch: Batch) -> float:
    """The weight sum of the tokens that carry loss: every example's weights but its first."""
    return float(sum(sum(e.weights[1:]) for e in batch.examples))


def _bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    return rank * n // world, (rank + 1) * n // world


def shard(batch: Batch, rank: int, world: int) -> Batch | None:
    """Process `rank`'s contiguous slice of `batch` among `world`; None if the slice is empty."""
    if batch.rows is not None:
        lo, hi = _bounds(len(batch.rows), rank, world)
        rows = batch.rows[lo:hi]
        return replace(batch, examples=[e for r in rows for e in r], rows=rows) if rows else None
    lo, hi = _bounds(len(batch.examples), rank, world)
    return replace(batch, examples=batch.examples[lo:hi]) if hi > lo else None


def first_unit(batch: Batch) -> Batch:
    """The batch's first row (or example): what a process without a slice runs at weight 0."""
    if batch.rows is not None:
        return replace(batch, examples=list(batch.rows[0]), rows=batch.rows[:1])
    return replace(batch, examples=batch.examples[:1])
