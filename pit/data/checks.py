"""Whether a data set holds what the chosen recipes need, checked before any training.

A comparison on a data set without train QA, test documents or an old split
would otherwise fail (or silently measure nothing) an hour in, in the middle
of a recipe. Every problem is collected first and reported in one error,
each naming what is missing and the option that adds it.
"""

from __future__ import annotations

from collections.abc import Sequence

from pit.config import PitConfig
from pit.data.dataset import KnowledgeDataset
from pit.data.source import SYNTHETIC
from pit.data.views import cross_domains, retention_questions, training_view
from pit.errors import DataError
from pit.recipe import Recipe


def _fix(cfg: PitConfig, synthetic: str, published: str) -> str:
    return synthetic if cfg.data.source == SYNTHETIC else published


def _sources(recipes: Sequence[Recipe]) -> dict[str, list[str]]:
    """Each source name, with the recipes that read it."""
    used: dict[str, list[str]] = {}
    for r in recipes:
        for st in r.stages:
            for name in st.source_names:
                if r.slug not in used.setdefault(name, []):
                    used[name].append(r.slug)
    return used


def _cross_recipes(recipes: Sequence[Recipe]) -> list[str]:
    return [r.slug for r in recipes if any(st.cross_domain for st in r.stages)]


def _domain_problems(ds: KnowledgeDataset, cfg: PitConfig,
                     recipes: Sequence[Recipe] = ()) -> list[str]:
    problems = []
    known = ", ".join(ds.domains) or "none"
    if cfg.data.test_domain not in ds.domains:
        problems.append(
            f"no domain {cfg.data.test_domain!r} to test on (domains: {known}); set "
            f"data.test_domain to one of them")
    crossing = _cross_recipes(recipes)
    if cfg.train.cross_domain or crossing:
        who = "train.cross_domain is on" if cfg.train.cross_domain else (
            f"{', '.join(crossing)} train on the cross domains")
        others = cross_domains(ds, cfg.data)
        unknown = [d for d in others if d not in ds.domains]
        if unknown:
            problems.append(f"data.cross_domains names {unknown}, not in the data set "
                            f"(domains: {known})")
        elif not others:
            problems.append(
                f"{who} but the data set has one domain only; " + _fix(
                    cfg, "set world.n_cross above 0",
                    "add a domain with `pit data wiki --domain NAME=REGEX`")
                + (", or set train.cross_domain=false" if cfg.train.cross_domain
                   else ", or leave those recipes out of --methods"))
    return problems


def _split_problems(ds: KnowledgeDataset, cfg: PitConfig, recipes: Sequence[Recipe]) -> list[str]:
    problems = []
    view = training_view(ds, cfg.data, cfg.train.cross_domain)
    domain = cfg.data.test_domain
    where = (f"the cross domains ({', '.join(cross_domains(ds, cfg.data))})"
             if cfg.train.cross_domain else f"domain {domain!r}")
    used = _sources(recipes)
    if not view.docs_where("test"):
        problems.append(f"no test documents in domain {domain!r}, which every recipe learns "
                        "or reads; " + _fix(cfg, "set world.n_test above 0",
                                            "raise `pit data wiki --test-fraction`"))
    if not view.qa_where("test"):
        problems.append(f"no test QA in domain {domain!r}, which every recipe is scored on; "
                        + _fix(cfg, "set world.n_test above 0",
                               "give its pages an infobox or add LLM QA with `pit data wiki "
                               "--llm-base-url URL --llm-model NAME`"))
    if "train_qa" in used and not view.qa_where("train"):
        problems.append(
            f"no train QA in {where}, needed by {', '.join(used['train_qa'])}; "
            + _fix(cfg, "set world.n_train above 0", "add LLM QA with `pit data wiki "
                   "--llm-base-url URL --llm-model NAME` or lower --test-fraction"))
    if "train_docs" in used and not view.docs_where("train"):
        problems.append(f"no train documents in {where}, needed by "
                        f"{', '.join(used['train_docs'])}; "
                        + _fix(cfg, "set world.n_train above 0",
                               "lower `pit data wiki --test-fraction`"))
    shots = [r.slug for r in recipes if r.evaluation == "closed-book"]
    if shots and cfg.eval.few_shot and not ds.qa_where("train", domain):
        problems.append(f"no train QA in domain {domain!r} to show as the "
                        f"{cfg.eval.few_shot} demonstrations of {', '.join(shots)}; "
                        "add train QA or set eval.few_shot=0")
    return problems


def _old_problems(ds: KnowledgeDataset, cfg: PitConfig, recipes: Sequence[Recipe]) -> list[str]:
    problems = []
    add_old = _fix(cfg, "set world.n_old above 0",
                   "add earlier pages with `pit data wiki --old-category REGEX`")
    used = _sources(recipes)
    if cfg.model.name_or_path == "embedded" and not ds.docs_where("old"):
        problems.append("no old split to pre-train the embedded model on; " + add_old
                        + ", or start from a pretrained model with --model")
    if cfg.data.retention_questions and not ds.qa_where("old"):
        problems.append("no old split QA to measure retention on; " + add_old
                        + ", or set data.retention_questions=0")
    if "old_docs" in used and not ds.docs_where("old"):
        problems.append(f"no old documents, replayed by {', '.join(used['old_docs'])}; "
                        + add_old)
    held_out = len(retention_questions(ds, cfg.data))
    if "old_qa" in used and len(ds.qa_where("old")) <= held_out:
        problems.append(
            f"no old QA left to replay in {', '.join(used['old_qa'])} once the "
            f"{held_out} retention questions are held out; " + add_old
            + " or lower data.retention_questions")
    return problems


def dataset_problems(ds: KnowledgeDataset, cfg: PitConfig,
                     recipes: Sequence[Recipe]) -> list[str]:
    """Everything the data set lacks for these recipes under this config; empty when fine."""
    problems = _domain_problems(ds, cfg, recipes)
    if not problems:
        problems += _split_problems(ds, cfg, recipes)
    return problems + _old_problems(ds, cfg, recipes)


def check_dataset(ds: KnowledgeDataset, cfg: PitConfig, recipes: Sequence[Recipe]) -> None:
    """Raise one DataError listing every problem, or return when the data set will do."""
    problems = dataset_problems(ds, cfg, recipes)
    if problems:
        name = _fix(cfg, "the synthetic world", f"data set {cfg.data.source}")
        slugs = ", ".join(r.slug for r in recipes)
        lines = "\n".join(f"  - {p}" for p in problems)
        raise DataError(f"{name} lacks what {slugs} need:\n{lines}")
