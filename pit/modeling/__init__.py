"""Models and tokenizers: the embedded small Llama, or any causal LM a reference names.

`embedded.py` builds the default from scratch; `reference.py` says what
`model.name_or_path` may name (a folder, a `.gguf` file, a Hugging Face id,
an `s3://` URI) and checks it before any work; `gguf.py` turns GGUF files
into plain float models; `loading.py` loads and saves through
`AutoModelForCausalLM` and safetensors, the same path for all of them.
"""

from pit.modeling.embedded import BOS, EOS, PAD, build_embedded_model, train_tokenizer
from pit.modeling.gguf import GGUF_INSTALL, detach_quantizer, load_gguf, require_gguf
from pit.modeling.loading import load_model, save_model, special_tokens, use_attention
from pit.modeling.reference import (
    ModelRef,
    check_folder,
    check_model,
    model_identity,
    parse_model_ref,
)

__all__ = [
    "BOS",
    "EOS",
    "GGUF_INSTALL",
    "PAD",
    "ModelRef",
    "build_embedded_model",
    "check_folder",
    "check_model",
    "detach_quantizer",
    "load_gguf",
    "load_model",
    "model_identity",
    "parse_model_ref",
    "require_gguf",
    "save_model",
    "special_tokens",
    "train_tokenizer",
    "use_attention",
]
