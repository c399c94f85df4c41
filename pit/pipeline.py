"""The steps of a comparison, in order: each a plain function of config and references.

Each step reads its inputs from the artifact store and publishes its output
there under a key that carries a hash of everything it depends on
(`pit.keys`): the same work lands on the same key, a finished output is
reused, and every recipe starts from the very same base model. Prefect tasks
in `tasks/` wrap these functions one to one and add retries, nothing else.
"""

from pit.base import build_base
from pit.data.source import build_dataset, load_dataset
from pit.evaluation import base_retention, evaluate
from pit.train.stages import run_stage

__all__ = ["build_dataset", "load_dataset", "build_base", "base_retention", "run_stage",
           "evaluate"]
