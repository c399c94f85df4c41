"""Greedy decoding of a left-padded batch, dropping each row from the batch once it has answered.

`model.generate` keeps every row of a batch in every decoding step until the
last row stops, and pays per step for machinery greedy answers never use
(logits processors, stopping criteria, sampling branches). Evaluation asks
short questions whose answers end after a handful of tokens, at different
steps per row, so both costs dominate on a CPU: a row that has emitted a stop
token leaves the batch (its KV cache rows with it) and the next step runs on
the rows still answering.

The tokens are those `generate(do_sample=False)` picks for the same prompts:
position ids count real tokens only (`attention_mask.cumsum - 1`, pads at 0),
each step attends to the whole left-padded prefix through the attention mask,
and the argmax of the last position's logits is the next token. Models whose
forward takes no `position_ids`, KV cache or `logits_to_keep` go
through `generate` instead (`supports`).
"""

from __future__ import annotations

import inspect

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

NEEDS = ("position_ids", "logits_to_keep", "attention_mask")
CACHE_KEYWORDS = ("cache", "past_key_values")


def cache_keyword(model: torch.nn.Module) -> str | None:
    """The keyword `model`'s forward takes its KV cache by (`cache` since transformers 5.x);
    None if it lacks that or any other keyword this decoder passes."""
    params = inspect.signature(model.forward).parameters
    if not all(name in params for name in NEEDS):
        return None
    return next((name for name in CACHE_KEYWORDS if name in params), None)


def supports(model: torch.nn.Module) -> bool:
    """Whether `model`'s forward takes every keyword this decoder passes."""
    return cache_keyword(model) is not None


class PreallocatedLayer(DynamicLayer):
    """A layer's KV cache written in place into room for the prompt and every answer token.

    transformers' `DynamicLayer` concatenates the whole cache with each new token,
    which copies the prompt's keys and values on every decoding step: half of a
    step's time for a small model on a CPU. This layer allocates once and hands
    attention a view of the filled part, so each step writes one token's worth.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        rows, heads = key_states.shape[:2]
        self.device = key_states.device
        self.key_room = key_states.new_empty(rows, heads, self.capacity, key_states.shape[-1])
        self.value_room = value_states.new_empty(rows, heads, self.capacity,
                                                 value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV cache room of {self.capacity} tokens exceeded ({end})")
        self.key_room[:, :, self.length : end] = key_states
        self.value_room[:, :, self.length : end] = value_states
        self.length = end
        self.keys = self.key_room[:, :, :end]
        self.values = self.value_room[:, :, :end]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.key_room = self.key_room[indices]
            self.value_room = self.value_room[indices]
            self.keys = self.key_room[:, :, : self.length]
            self.values = self.value_room[:, :, : self.length]


def new_cache(model: torch.nn.Module, capacity: int) -> DynamicCache:
    """A dynamic cache whose plain full-attention layers are preallocated to `capacity` tokens.

    Layers of any other kind (sliding windows, linear attention) stay as transformers
    builds them.
    """
    cache = DynamicCache(config=model.config)
    cache.layers = [PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer
                    for layer in cache.layers]
    return cache


@torch.no_grad()
def greedy_rows(model: torch.nn.Module, ids: torch.Tensor, attention_mask: torch.Tensor,
                max_new_tokens: int, stop_ids: list[int]) -> list[list[int]]:
    """The generated tokens of each row of a left-padded batch, each up to its first stop token.

    A row's list ends with the stop token it emitted, or after `max_new_tokens`.
    """
    rows = ids.size(0)
    generated: list[list[int]] = [[] for _ in range(rows)]
    if max_new_tokens <= 0 or rows == 0:
        return generated
    stops = torch.tensor(stop_ids, device=ids.device)
    mask = attention_mask.long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = {cache_keyword(model): new_cache(model, ids.size(1) + max_new_tokens)}
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                use_cache=True, logits_to_keep=1, **cache)
    alive = torch.arange(rows, device=ids.device)
    last = positions[:, -1]
    for step in range(max_new_tokens):
        token = out.logits[:, -1].argmax(-1)
        for row, t in zip(alive.tolist(), token.tolist(), strict=True):
            generated[row].append(t)
        if step == max_new_tokens - 1:
            break
        going = ~torch.isin(token, stops)
        if not bool(going.any()):
            break
        if not bool(going.all()):
            keep = going.nonzero().squeeze(1)
            next(iter(cache.values())).batch_select_indices(keep)
            alive, token, mask, last = alive[keep], token[keep], mask[keep], last[keep]
        mask = torch.cat([mask, mask.new_ones(mask.size(0), 1)], dim=1)
        last = last + 1
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=last[:, None],
                    use_cache=True, logits_to_keep=1, **cache)
    return generated
