"""GGUF files (llama.cpp's format) loaded as plain float models that train and save like any other.

transformers reads a `.gguf` file through a quantizer: depending on its
version and on whether a matmul kernel is installed, it either keeps the
weights packed in GGUF blocks (inference only) or unpacks them to floats
but leaves the quantizer attached, after which `save_pretrained` refuses
with "The model is quantized with gguf and is not serializable". pit
trains the model, checkpoints it and publishes it as safetensors, so it
always asks for the unpacked weights and then detaches the quantizer: the
result is an ordinary `PreTrainedModel`, and a folder saved from it loads
without `model.gguf_file`.

Reading GGUF needs the `gguf` package, which pit does not require for
other models; :func:`require_gguf` turns its absence into a clear error
before any work starts, instead of an ImportError deep in a training task.
"""

from __future__ import annotations

import importlib
import importlib.metadata

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from pit.errors import ConfigError

GGUF_MIN_VERSION = "0.10"
GGUF_INSTALL = f"pip install 'gguf>={GGUF_MIN_VERSION}'"


def require_gguf(model: str) -> None:
    """Raise a :class:`ConfigError` naming the install command unless `gguf` is importable."""
    from packaging.version import Version

    fix = (f"Install it with `{GGUF_INSTALL}`, or convert the model to safetensors and pass "
           "its folder as model.name_or_path without model.gguf_file.")
    try:
        importlib.import_module("gguf")
    except ImportError:
        raise ConfigError(
            [f"model.gguf_file: {model} is a GGUF file, and reading GGUF files needs the Python "
             f"package `gguf`, which is not installed. {fix}"],
            source="model config",
        ) from None
    try:
        installed = importlib.metadata.version("gguf")
    except importlib.metadata.PackageNotFoundError:
        return
    if Version(installed) < Version(GGUF_MIN_VERSION):
        raise ConfigError(
            [f"model.gguf_file: {model} is a GGUF file, and the installed `gguf` {installed} is "
             f"too old to read it (transformers needs {GGUF_MIN_VERSION} or newer). {fix}"],
            source="model config",
        )


def _dequantize_option() -> dict:
    """`quantization_config` asking for float weights, where transformers has the option."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always unpacks GGUF weights
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def detach_quantizer(model: PreTrainedModel, name: str) -> PreTrainedModel:
    """Make a model whose weights are already floats an ordinary, serialisable one."""
    packed = [n for n, p in model.named_parameters() if not p.is_floating_point()]
    if packed:
        raise ConfigError(
            [f"model.gguf_file: transformers kept {len(packed)} weights of {name} packed in "
             f"GGUF blocks (e.g. {packed[0]}), which cannot be trained. Use a transformers "
             "version that can unpack them (`GgufConfig(dequantize=True)`), or convert the "
             "model to safetensors first."],
            source="model config",
        )
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
        quantizer.remove_quantization_config(model)
    for attr in ("hf_quantizer", "quantization_method"):
        if attr in vars(model):
            delattr(model, attr)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model


def load_gguf(
    folder: str, gguf_file: str, dtype: torch.dtype, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, object]:
    """The model and tokenizer of a GGUF file in `folder` (or on the Hub), as float weights."""
    require_gguf(gguf_file)
    kwargs = {"gguf_file": gguf_file, "trust_remote_code": trust_remote_code}
    tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, **kwargs, **_dequantize_option()
    )
    return detach_quantizer(model, gguf_file), tokenizer
