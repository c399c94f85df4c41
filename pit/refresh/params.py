"""What one knowledge refresh is asked to do: the one parameter model of `pit refresh` and its flow.

The CLI builds a `RefreshParams` from its flags and the `knowledge-refresh`
deployment's form is rendered from the same model, so both offer the same
options under the same names, with the same defaults. Closed choices (the
recipe, the preset) are `Literal`s, which the Prefect UI shows as drop-downs.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from pit.config import PitConfig
from pit.config_sources import load_config, string_override
from pit.errors import ConfigError
from pit.recipe import Recipe, Source, select_recipes

RefreshRecipe = Literal["pit", "pit++", "pit--", "pit-replay", "pit-qa-only", "pit-qa-then-docs",
                        "mix-all", "cpt-it", "cpt"]
"""Shipped recipes that learn the month's documents on top of a train side of earlier months."""

Preset = Literal["smoke", "demo"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RefreshParams(BaseModel):
    """Everything `pit refresh` and the `knowledge_refresh` flow accept."""

    model_config = ConfigDict(extra="forbid")

    mirror: str = Field(
        ..., description="Dump mirror: a folder or URL laid out like https://dumps.wikimedia.org "
        "(<wiki>/<YYYYMMDD>/dumpstatus.json); the newest finished dump newer than the last one "
        "processed is learned.")
    wiki: str = Field("enwiki", description="Wiki on the mirror, e.g. enwiki, dewiki.")
    category: str = Field(
        ..., description=r"Regex over category names of the pages to keep current, e.g. "
        r"'^20(2[3-9]) films$'. Their new and changed pages are the month's new knowledge.")
    old_category: str | None = Field(
        None, description=r"Regex over category names of earlier pages, e.g. "
        r"'^19[0-7]\d films$': the world the model already knows, asked again every month "
        "(the fixed probe set) to measure forgetting.")
    model: str | None = Field(
        None, description="Model of the first month, when no version is `champion` yet: "
        "'embedded' (the small model pre-trained on the first dump's old split), a Hugging Face "
        "id, a folder, a .gguf file or an s3:// URI; default: the config's (embedded in the "
        "presets).")
    registered_model: str = Field(
        ..., description="MLflow registered model whose versions the refresh adds; its "
        "`champion` alias names the model that is continued each month.")
    recipe: RefreshRecipe = Field(
        "pit", description="Recipe that continues the champion: earlier months' QA and "
        "documents as its train side, the month's documents as its test side.")
    min_gain: float = Field(
        0.0, description="Gate: least gain in exact match (points, 0-100) on the month's "
        "held-out questions over the champion for the new version to be promoted.")
    max_forgetting: float = Field(
        5.0, description="Gate: most drop in exact match (points) on earlier questions (earlier "
        "months' and the fixed probe set) from the champion to the new version.")
    replay: float = Field(
        0.0, ge=0, description="Old documents replayed per new document in the stage that "
        "learns the month's documents (0: none), against forgetting.")
    preset: Preset | None = Field(
        "smoke", description="Shipped preset of model size, training and evaluation settings.")
    config_file: str | None = Field(None, description="A YAML config instead of a preset.")
    overrides: list[str] = Field(
        default_factory=list, description="section.field=value overrides, as with --set.")
    artifact_root: str | None = Field(
        None, description="Where data sets, models, checkpoints and the refresh state go: a "
        "folder or s3://bucket/prefix; default: the config's storage.root.")
    cache: str = Field("~/.cache/pit/dumps", description="Where downloaded dumps go.")
    workers: int | None = Field(
        None, ge=1, description="Processes that scan the dump; unset: all cores.")
    experiment: str | None = Field(
        None, description="MLflow experiment of the refresh (a run per month); default: "
        "refresh-<registered model>.")

    def problems(self) -> list[str]:
        """Every problem with these parameters at once, each with its fix."""
        out = []
        if not self.mirror.strip():
            out.append("mirror is empty: give the folder or URL of a dump mirror")
        for label, pattern in (("category", self.category), ("old_category", self.old_category)):
            if pattern is None:
                continue
            try:
                re.compile(pattern)
            except re.error as e:
                out.append(f"{label} regex {pattern!r}: {e}")
        if self.old_category is not None and self.old_category == self.category:
            out.append("old_category is the same regex as category, so no page could be old: "
                       "give the categories of earlier years")
        if not _NAME.match(self.registered_model):
            out.append(f"registered_model {self.registered_model!r}: use letters, digits, '.', "
                       "'_' and '-' only (at most 100), e.g. films-refresh")
        if self.preset and self.config_file:
            out.append("give either preset or config_file, not both (set preset to null)")
        return out

    def validate_all(self) -> None:
        problems = self.problems()
        if problems:
            raise ConfigError(problems, source="pit refresh options")

    @property
    def experiment_name(self) -> str:
        return self.experiment or f"refresh-{self.registered_model}"

    def config(self) -> PitConfig:
        """The PitConfig every step of the refresh runs with."""
        extra = list(self.overrides)
        if self.artifact_root:
            extra.append(string_override("storage.root", self.artifact_root))
        if self.model:
            extra.append(string_override("model.name_or_path", self.model))
        extra += [string_override("tracking.experiment", self.experiment_name),
                  f"train.replay_share={self.replay}"]
        cfg = load_config(None if self.config_file else self.preset, self.config_file, extra)
        return cfg.model_copy(update={"methods": [self.recipe], "seeds": 1})

    def recipe_for(self) -> Recipe:
        """The chosen recipe; with `replay`, its stages that learn new documents replay old ones."""
        recipe = select_recipes([self.recipe])[0]
        if not self.replay or any("replay" in st.source_names for st in recipe.stages):
            return recipe
        stages = [st.model_copy(update={"sources": [*st.sources, Source(name="replay")]})
                  if st.reads_test_docs else st for st in recipe.stages]
        return recipe.model_copy(update={"stages": stages})


REFRESH_RECIPES: tuple[str, ...] = get_args(RefreshRecipe)
