"""Recipes as data: a recipe is a list of stages, each naming its sources and their mix.

Shipped recipes live in `pit/recipes/*.yaml`, one file per slug; a user adds a
recipe by writing another YAML file (and passing its folder), no Python.

A stage reads one or more sources:

- `train_qa`, `train_docs`: the training split (the second domain's when
  `train.cross_domain` is on);
- `test_docs`: the documents whose facts are to be learned;
- `old_docs`, `old_qa`: the base model's world, for replay against forgetting;
- `replay`: old documents, `train.replay_share` of them per test document, mixed
  into a stage that learns the new ones so the old world is kept.

A source may take a `limit` (cpt keeps 64 train QA pairs so the answer format
survives). `arrangement` says how QA pairs and documents meet in one stage:
`shuffled` (independent examples in random order: the paper's PIT),
`interleaved` (each document carries its own QA pairs in one sequence, before
or after it, by `qa_position`), or `grouped` (all QA pairs of the epoch in one
block, before or after all documents). `epochs` is a number or the name of a
`train` config field (`pit_epochs`, `it_epochs`, `test_doc_epochs`), so one
recipe follows the config it is run with.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pit.config import TrainConfig
from pit.errors import ConfigError, UnknownRecipeError

SOURCES = ("train_qa", "train_docs", "test_docs", "old_docs", "old_qa", "replay")
EPOCH_FIELDS = ("pit_epochs", "it_epochs", "test_doc_epochs")


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["train_qa", "train_docs", "test_docs", "old_docs", "old_qa", "replay"]
    limit: int | str | None = Field(
        None, description="Keep only the first N items (or the train field naming N)."
    )
    share: float | None = Field(
        None, ge=0, description="For `replay`: old documents per test document; unset: "
        "train.replay_share.",
    )
    with_qa: bool = Field(
        False, description="For `replay`: also the replayed films' old QA pairs (never a "
        "held-out retention question), the base model's own mix of documents and questions.",
    )


class Stage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: list[Source]
    epochs: int | Literal["pit_epochs", "it_epochs", "test_doc_epochs"] = 1
    arrangement: Literal["shuffled", "interleaved", "grouped"] = "shuffled"
    qa_position: Literal["before", "after"] = "before"
    doc_lr: float | None = None
    qa_lr: float | None = None
    answer_span_weight: float | None = Field(
        None, description="Loss weight of answer-span tokens in documents (weighted cpt)."
    )
    other_token_weight: float = Field(1.0, ge=0)
    cross_domain: bool = Field(
        False, description="Read train_qa and train_docs from the cross domains (the paper's "
        "cross-domain setting: learn to answer on other domains, be tested on films).",
    )

    @field_validator("sources", mode="before")
    @classmethod
    def _names_as_sources(cls, v):
        return [{"name": s} if isinstance(s, str) else s for s in v]

    @property
    def source_names(self) -> list[str]:
        return [s.name for s in self.sources]

    @property
    def reads_test_docs(self) -> bool:
        return "test_docs" in self.source_names

    def resolved_epochs(self, train: TrainConfig) -> int:
        return self.epochs if isinstance(self.epochs, int) else int(getattr(train, self.epochs))


class PaperFigures(BaseModel):
    exact_match: float | None = None
    answer_recall: float | None = None
    rouge_l: float | None = None


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    slug: str
    description: str
    evaluation: Literal["zero-shot", "closed-book", "open-book"] = "zero-shot"
    stages: list[Stage] = []
    paper: PaperFigures = PaperFigures()
    group: str = Field("main", description="main table, variant, or epochs ablation")

    def describe(self) -> str:
        """One line per recipe: the stages as the paper's table writes them."""
        if not self.stages:
            return f"none ({self.evaluation})"
        parts = []
        for st in self.stages:
            names = " + ".join(
                s.name + (f"[{s.limit}]" if s.limit is not None else "")
                + (f"[x{s.share:g}]" if s.share is not None else "") for s in st.sources
            )
            extra = "" if st.arrangement == "shuffled" else f", {st.arrangement} {st.qa_position}"
            parts.append(f"{names} ({st.epochs} ep{extra})")
        return " -> ".join(parts)


def _recipe_files(extra_dirs: list[Path] | None = None) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    for entry in resources.files("pit.recipes").iterdir():
        if entry.name.endswith(".yaml"):
            out[entry.name[:-5]] = (entry.read_text(), f"pit/recipes/{entry.name}")
    for d in extra_dirs or []:
        d = Path(d)
        if not d.is_dir():
            raise ConfigError([f"recipes folder {d} does not exist"], source="command line")
        for f in sorted(d.glob("*.yaml")):
            out[f.stem] = (f.read_text(), str(f))
    return out


def parse_recipe(text: str, origin: str) -> Recipe:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError([f"not valid YAML: {e}"], source=f"recipe {origin}") from e
    if not isinstance(data, dict):
        raise ConfigError(["a recipe is a mapping with slug, description, stages"],
                          source=f"recipe {origin}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"]
            if err["type"] == "literal_error":
                msg += f" (got {err.get('input')!r})"
            problems.append(f"{loc}: {msg}")
        raise ConfigError(problems, source=f"recipe {origin}") from None


def all_recipes(extra_dirs: list[Path] | None = None) -> dict[str, Recipe]:
    return {slug: parse_recipe(text, origin)
            for slug, (text, origin) in _recipe_files(extra_dirs).items()}


MAIN_ORDER = ("closed-book", "open-book", "cpt", "cpt-it", "cpt-it-no-forget",
              "it-no-train-docs", "weighted-cpt", "adapted-cpt", "mix-all", "pit-qa-only",
              "pit-qa-then-docs", "pit", "pit--", "pit++")


def _order(slugs: list[str], recipes: dict[str, Recipe]) -> list[str]:
    rank = {s: i for i, s in enumerate(MAIN_ORDER)}
    return sorted(slugs, key=lambda s: (rank.get(s, len(rank)), recipes[s].group, s))


def select_recipes(methods: list[str] | str, extra_dirs: list[Path] | None = None) -> list[Recipe]:
    """Resolve slugs (or `all`, `main`) to recipes, failing on the first unknown slug."""
    recipes = all_recipes(extra_dirs)
    if isinstance(methods, str):
        methods = [m for m in methods.split(",") if m.strip()]
    slugs: list[str] = []
    for m in (m.strip() for m in methods):
        if m == "all":
            slugs += _order(list(recipes), recipes)
        elif m == "main":
            slugs += _order([s for s, r in recipes.items() if r.group == "main"], recipes)
        elif m in recipes:
            slugs.append(m)
        else:
            raise UnknownRecipeError(m, list(recipes) + ["all", "main"])
    return [recipes[s] for s in dict.fromkeys(slugs)]
