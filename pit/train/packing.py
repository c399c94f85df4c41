"""Packed batches: the examples of a batch laid end to end in rows of `model.max_seq_len`.

Padding each batch to its longest example wastes most of a step on the
short sequences this project trains on (a QA pair is a few dozen tokens, a
document a few hundred). Packing fills fixed-length rows instead, by
best-fit decreasing: examples longest first, each into the row it fills
most tightly, a new row when none has room. Only the tail of a row is padded.

A row of three examples (`a`, `b`, `c`) and two pad tokens `_`:

    tokens       a0 a1 a2 a3 b0 b1 b2 c0 c1 _  _
    position     0  1  2  3  0  1  2  0  1  0  1      restarts with every example
    weight       0  0  1  1  0  1  1  0  1  0  0      the examples' own; first token 0

    attention    a0 a1 a2 a3 b0 b1 b2 c0 c1 _  _      (query row, key column)
           a3    x  x  x  x  .  .  .  .  .  .  .      causal, and only inside its example:
           b2    .  .  .  .  x  x  x  .  .  .  .      a block-diagonal causal mask
           c1    .  .  .  .  .  .  .  x  x  .  .
           _     .  .  .  .  .  .  .  .  .  x  x      the pad tail is a block of its own

So every example sees exactly what it would see alone in a batch of one, its
answer-only loss weights travel with it, and the loss of a packed batch (the
weighted mean over all its tokens) equals that of the same examples padded.
The first token of each example carries no loss: the token before it belongs
to another example. The output layer and the loss run only at positions whose
next token carries loss (`logits_to_keep`), so question prompts and pads cost
no vocabulary-sized projection either.

How attention is kept inside each example depends on the backend:

- CPU, and GPU with SDPA or eager attention: an explicit block-diagonal
  causal mask of shape (rows, 1, row_len, row_len), boolean for SDPA,
  additive for eager. Attention still costs row_len squared per row, masked
  blocks included; what packing saves is padding everywhere else (embeddings,
  MLPs, the output layer, the loss).
- GPU with flash attention (`attn_implementation="flash_attention_2"` or
  `_3`): no mask; the cumulative sequence lengths of the examples and pad tails
  go to transformers' variable-length path (`flash_attn_varlen_func`), so
  attention costs only each example's own length squared.

Row length (`train.pack_row_len`): with a block mask attention costs the
whole row's length per token, masked blocks included, so on a CPU long rows of
short examples spend most of a step on attention nobody reads. With `auto`
each kind gets the length, between its longest example and `model.max_seq_len`,
that minimises the step's estimated FLOPs: every slot of every row (pads
included) costs the model's matrix products plus attention over the row
(`row_length`). For the demo's QA pairs (16 tokens on average, 25 at most)
and a 0.6M-parameter model that is rows of about 64 tokens, not 256. Under
flash attention rows cost only their examples, so `auto` fills whole
`model.max_seq_len` rows; a number fixes the length for every kind.

Batch size: a packed batch of a kind is a fixed number of rows,
`max(1, round(batch_size * mean example length / row_len))`, with the kind's
batch size (`train.doc_batch_size` or `train.qa_batch_size`) and the mean
length of that kind's examples in the stage. A step then sees about as many
tokens and examples as an unpacked step, so learning rates and the number of
steps keep their meaning, and every step has the same tensor shape. Kinds are
never mixed in one batch, as unpacked: documents and QA pairs keep their own
learning rates.
"""

from __future__ import annotations

import bisect
import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pit.errors import DataError
from pit.train.examples import Example

FLASH_PREFIX = "flash_attention"
MASKED = ("sdpa", "eager")


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into bins of at most `capacity`, by best-fit decreasing.

    Ties in length keep their order in `lengths`, so a shuffled input gives a
    different packing with the same fill. An item longer than `capacity` is
    rejected: the examples' builder cuts them to `model.max_seq_len` already,
    so one longer than a row means the row length and the model disagree.
    """
    too_long = [n for n in lengths if n > capacity]
    if too_long:
        raise DataError(
            f"an example of {max(too_long)} tokens does not fit a packed row of {capacity} "
            "tokens; set train.pack_row_len to 'auto' or at least the longest example, build "
            "examples with the same model.max_seq_len as the rows, or turn train.packing off"
        )
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, bin index), sorted
    for i in order:
        at = bisect.bisect_left(free, (lengths[i], -1))
        if at == len(free):
            bins.append([i])
            bisect.insort(free, (capacity - lengths[i], len(bins) - 1))
        else:
            room, b = free.pop(at)
            bins[b].append(i)
            bisect.insort(free, (room - lengths[i], b))
    return bins


Row = tuple[Example, ...]
ROW_STEP = 8


@dataclass(frozen=True)
class SlotCost:
    """FLOPs one slot of a packed row costs: `per_slot` plus `per_key` for each token of the row.

    `per_slot` is the model's matrix products for one token; `per_key` the attention
    of one query on one key, paid for every key of the row under a block mask.
    """

    per_slot: float
    per_key: float

    @classmethod
    def of(cls, model: torch.nn.Module) -> SlotCost:
        from pit.train.throughput import ModelFlops

        flops = ModelFlops(model)
        return cls(6.0 * flops.params, 12.0 * flops.layers * flops.width)


@functools.lru_cache(maxsize=64)
def _cheapest(lengths: tuple[int, ...], max_len: int, cost: SlotCost) -> int:
    longest = max(lengths)
    candidates = sorted({*range(-(-longest // ROW_STEP) * ROW_STEP, max_len, ROW_STEP),
                         longest, max_len})
    best, best_cost = max_len, math.inf
    for n in candidates:
        slots = len(best_fit_decreasing(lengths, n)) * n
        estimate = slots * (cost.per_slot + cost.per_key * n)
        if estimate < best_cost:
            best, best_cost = n, estimate
    return best


def slot_cost(model: torch.nn.Module) -> SlotCost | None:
    """What `row_length` prices rows by for `model`: None under flash attention (no mask)."""
    if model.config._attn_implementation.startswith(FLASH_PREFIX):
        return None
    return SlotCost.of(model)


def row_length(lengths: Sequence[int], max_len: int, cost: SlotCost | None) -> int:
    """The packed row length of examples of `lengths` that costs the fewest FLOPs per epoch.

    `cost` None (flash attention: a row costs only its examples) gives `max_len`.
    Candidates run from the longest example to `max_len` in steps of `ROW_STEP`;
    each is packed by best-fit decreasing and priced by `cost`.
    """
    if cost is None or not lengths:
        return max_len
    return _cheapest(tuple(sorted(lengths)), max_len, cost)


def rows_per_batch(examples: Sequence[Example], batch_size: int, row_len: int) -> int:
    """Rows that hold about `batch_size` examples of the mean length (see the module doc)."""
    mean = sum(len(e.input_ids) for e in examples) / max(1, len(examples))
    return max(1, round(batch_size * mean / row_len))


def pack_rows(examples: Sequence[Example], batch_size: int, row_len: int,
              rng: random.Random) -> list[tuple[Row, ...]]:
    """One epoch's examples of one kind packed into rows, the rows shuffled and grouped by batch."""
    if not examples:
        return []
    bins = best_fit_decreasing([len(e.input_ids) for e in examples], row_len)
    rows = [tuple(examples[i] for i in b) for b in bins]
    rng.shuffle(rows)
    n = rows_per_batch(examples, batch_size, row_len)
    return [tuple(rows[i : i + n]) for i in range(0, len(rows), n)]


@dataclass(frozen=True)
class PackedTensors:
    """A packed batch as tensors: what the model reads and what the loss weighs."""

    ids: torch.Tensor  # (rows, row_len)
    weights: torch.Tensor  # (rows, row_len); 0 on pads and on each example's first token
    positions: torch.Tensor  # (rows, row_len); restart at 0 with each example and pad tail
    segments: torch.Tensor  # (rows, row_len); the example's index in its row, -1 on pads
    lengths: list[int]  # every example and pad tail in row order: the varlen boundaries


def pack_tensors(rows: Sequence[Row], row_len: int, pad_id: int) -> PackedTensors:
    shape = (len(rows), row_len)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    w = torch.zeros(shape, dtype=torch.float32)
    pos = torch.zeros(shape, dtype=torch.long)
    seg = torch.full(shape, -1, dtype=torch.long)
    lengths: list[int] = []
    for r, row in enumerate(rows):
        at = 0
        for s, e in enumerate(row):
            k = len(e.input_ids)
            ids[r, at : at + k] = torch.tensor(e.input_ids)
            w[r, at + 1 : at + k] = torch.tensor(e.weights[1:])
            pos[r, at : at + k] = torch.arange(k)
            seg[r, at : at + k] = s
            lengths.append(k)
            at += k
        if at < row_len:
            pos[r, at:] = torch.arange(row_len - at)
            lengths.append(row_len - at)
    return PackedTensors(ids, w, pos, seg, lengths)


def block_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """(rows, 1, L, L) booleans: True where a query may attend a key (see the module doc)."""
    n = segments.size(1)
    same = segments[:, :, None] == segments[:, None, :]
    causal = torch.ones(n, n, dtype=torch.bool, device=segments.device).tril()
    return (same & causal)[:, None]


def model_inputs(rows: Sequence[Row], row_len: int, pad_id: int, device,
                 attn_implementation: str, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, dict, torch.Tensor, torch.Tensor]:
    """Token ids, forward keywords, and the targets and weights of the tokens that carry loss.

    The keywords go to a Hugging Face causal LM's forward: position ids, with
    the block mask (SDPA, eager) or the variable-length boundaries (flash
    attention); `use_cache=False`, since a cache has no use in training and
    transformers ignores packed boundaries when there is one; and
    `logits_to_keep`, the positions whose next token carries loss, so the
    output layer and the loss skip prompts and pads.
    """
    t = pack_tensors(rows, row_len, pad_id)
    keep = torch.zeros_like(t.weights, dtype=torch.bool)
    keep[:, :-1] = t.weights[:, 1:] > 0
    kwargs: dict = {"position_ids": t.positions.to(device), "use_cache": False,
                    "logits_to_keep": keep.to(device)}
    if attn_implementation.startswith(FLASH_PREFIX):
        cu = torch.tensor([0, *t.lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
        kwargs.update(cu_seq_lens_q=cu.to(device), cu_seq_lens_k=cu.to(device),
                      max_length_q=max(t.lengths), max_length_k=max(t.lengths))
    elif attn_implementation in MASKED:
        mask = block_causal_mask(t.segments.to(device))
        if attn_implementation == "eager":
            blocked = torch.finfo(dtype).min
            mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, blocked)
        kwargs["attention_mask"] = mask
    else:
        raise DataError(
            f"train.packing cannot keep examples apart under attn_implementation="
            f"{attn_implementation!r}; load the model with 'sdpa', 'eager' or "
            "'flash_attention_2', or turn train.packing off"
        )
    targets = t.ids[:, 1:][keep[:, :-1]]
    weights = t.weights[:, 1:][keep[:, :-1]]
    return t.ids.to(device), kwargs, targets.to(device), weights.to(device)


def packed_loss(model: torch.nn.Module, rows: Sequence[Row], row_len: int, pad_id: int,
                device, attn_implementation: str, dtype: torch.dtype,
                total: float | None = None) -> torch.Tensor:
    """The weighted mean token loss of a packed batch: the same number as unpacked.

    `model` is what the loop calls (wrapped or not); the attention implementation
    and dtype are those of the Hugging Face model inside it. `total` divides the
    weighted sum instead of these rows' own weight sum: the whole batch's, when
    these rows are one process's share of it (`pit.train.sharding`).
    """
    ids, kwargs, targets, weights = model_inputs(rows, row_len, pad_id, device,
                                                 attn_implementation, dtype)
    logits = model(input_ids=ids, **kwargs).logits
    if logits.dim() == 3:  # a model that ignores a boolean logits_to_keep returns every position
        logits = logits[kwargs["logits_to_keep"]]
    nll = F.cross_entropy(logits.float(), targets, reduction="none")
    return (nll * weights).sum() / loss_divisor(weights, total)


def loss_divisor(weights: torch.Tensor, total: float | None) -> torch.Tensor | float:
    """The weight sum a loss is divided by: `total` if given, else that of `weights`."""
    divisor = weights.sum() if total is None else total
    if divisor <= 0:
        raise DataError("a training batch has no token to learn (every loss weight is 0)")
    return divisor
