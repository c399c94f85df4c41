"""Writing QA pairs with a local transformers model instead of an HTTP endpoint.

The model loads from safetensors only (a pickled folder is refused before
transformers reads it) and answers a batch of documents at a time, greedy,
left-padded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pit.errors import ModelNotFoundError
from pit.wiki.qa_llm.config import LLMQAConfig
from pit.wiki.qa_llm.prompt import build_messages


def load_local_model(config: LLMQAConfig) -> tuple[Any, Any]:
    """The tokenizer (left padding, a pad token) and the model, on the configured device."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = config.model_name_or_path
    assert name is not None
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    _check_safetensors(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, use_safetensors=True)
    except OSError as exc:
        raise ModelNotFoundError(
            f"cannot load the QA model {name!r}: {exc}. "
            "Give a local folder or a Hugging Face id this machine can download."
        ) from exc
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.to(device).eval()
    return tokenizer, model


def generate_local(tokenizer: Any, model: Any, docs: list[dict[str, Any]], indices: list[int],
                   store: Callable[[int, str], None], config: LLMQAConfig) -> None:
    """Replies to `docs`, batch by batch; `store(indices[k], reply)` for the k-th document."""
    import torch

    size = config.local_batch_size
    for start in range(0, len(docs), size):
        batch = docs[start : start + size]
        rendered = [_render_prompt(tokenizer, build_messages(d, config)) for d in batch]
        prompts = [prompt for prompt, _ in rendered]
        enc = tokenizer(
            prompts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(model.device)
        with torch.no_grad():
            out = model.generate(
                **enc,
                do_sample=False,
                max_new_tokens=config.max_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        texts = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for i, (_, cue), text in zip(indices[start : start + size], rendered, texts, strict=True):
            store(i, cue + text)


def _render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, str]:
    """The prompt, and the cue it ends in that the reply continues.

    A chat model gets its own chat template; a base model gets plain text ending
    in "Q:", which steers it into the format, and the cue is put back in front of
    its continuation so the parser sees whole pairs.
    """
    if getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(prompt), ""
    bos = tokenizer.bos_token or ""
    return bos + "\n\n".join(m["content"] for m in messages) + "\n\nQ:", "Q:"


def _check_safetensors(name: str) -> None:
    """Refuse a local QA model folder without safetensors weights, before transformers reads it.

    A pickled `pytorch_model.bin` runs code when it is loaded, and a QA model
    folder is as likely as any to come from elsewhere; `use_safetensors=True`
    refuses pickles for Hub ids too, this says what to do about a folder.
    """
    from pit.modeling.reference import ModelRef, check_folder

    folder = Path(name).expanduser()
    if folder.is_dir():
        try:
            check_folder(ModelRef("folder", str(folder)))
        except ModelNotFoundError as e:
            raise ModelNotFoundError(f"QA model (model_name_or_path): {e}") from None
