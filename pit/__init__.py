"""pit: keep a language model's knowledge current with pre-instruction-tuning."""

from pit.data.dataset import KnowledgeDataset
from pit.errors import ConfigError, DataError, ModelNotFoundError, PitError, UnknownRecipeError

__all__ = [
    "ConfigError",
    "DataError",
    "KnowledgeDataset",
    "ModelNotFoundError",
    "PitError",
    "UnknownRecipeError",
]
__version__ = "0.1.0"
