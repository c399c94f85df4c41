"""A model scored on a data set: test QA, test-document perplexity, retention of the old world.

The same function scores the untrained base, each epoch of a stage that reads
the test documents, and each recipe's final model, so the numbers of all
three compare. Forgetting is the base's retention minus the model's.
"""

from __future__ import annotations

import random
from typing import Any

from pit.artifacts import model_path
from pit.config import PitConfig
from pit.data.dataset import KnowledgeDataset
from pit.data.source import load_dataset
from pit.data.views import (
    demonstrations,
    eval_documents,
    eval_questions,
    retention_questions,
)
from pit.data.world import perplexity_floor
from pit.device import device
from pit.eval.cloze import cloze_items
from pit.eval.evaluator import Evaluator
from pit.modeling import load_model
from pit.progress import bar
from pit.recipe import Recipe
from pit.tracking import tracker_for


def score(cfg: PitConfig, model, tokenizer, ds: KnowledgeDataset, mode: str = "zero-shot",
          ) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Test QA (in `mode`), test-document perplexity and retention; metrics and predictions."""
    ev = Evaluator(model, tokenizer, cfg.eval, cfg.model.max_seq_len)
    questions = eval_questions(ds, cfg.data)
    docs_by_id = {d["doc_id"]: d for d in ds.docs}
    with bar(len(questions), f"answering ({mode})") as advance:
        metrics, rows = ev.answer(questions, mode, docs_by_id, demonstrations(ds, cfg.data),
                                  progress=advance)
    test_docs = eval_documents(ds, cfg.data)
    metrics["test_doc_ppl"] = ev.perplexity([d["text"] for d in test_docs])
    retention = retention_questions(ds, cfg.data)
    if retention:
        metrics["retention_em"] = ev.answer(retention, "zero-shot")[0]["exact_match"]
    metrics.update(diagnostics(cfg, ev, ds, questions, test_docs))
    return metrics, rows


def diagnostics(cfg: PitConfig, ev: Evaluator, ds: KnowledgeDataset, questions: list[dict],
                test_docs: list[dict]) -> dict[str, float]:
    """What the score alone hides: format kept, facts stored, how low perplexity can go.

    `train_qa_em` answers a fixed sample of train QA pairs (a model that forgot the
    answer format scores near 0 here too); `cloze_recall` completes test-document
    sentences cut before their answers (facts stored, whether or not questions
    reach them); `test_doc_ppl_floor` is the synthetic world's fact floor (a model that
    knows every fact but not the wording), beside which `test_doc_ppl` says whether the
    documents' facts were learned, or their wording too.
    """
    out: dict[str, float] = {}
    train_qa = demonstrations(ds, cfg.data)
    if cfg.eval.train_qa_sample and train_qa:
        sample = random.Random(0).sample(train_qa, min(cfg.eval.train_qa_sample, len(train_qa)))
        out["train_qa_em"] = ev.answer(sample, "zero-shot")[0]["exact_match"]
    if cfg.eval.cloze:
        items = cloze_items(questions, test_docs)
        if items:
            out["cloze_recall"] = ev.cloze(items)[0]
    if ds.meta.get("kind") == "synthetic":
        floor = perplexity_floor(test_docs, ev.count_tokens)
        if floor:
            out["test_doc_ppl_floor"] = floor
    return out


def evaluate(
    cfg: PitConfig, recipe: Recipe, model_ref: str, data_ref: str, run_id: str | None,
    retention_before: float | None, step: int = 0,
) -> dict[str, Any]:
    """Final metrics of a recipe's model: logged to its run, predictions as a table."""
    ds = load_dataset(cfg, data_ref)
    model, tokenizer = load_model(model_path(cfg, model_ref), cfg.model, device=device())
    metrics, rows = score(cfg, model, tokenizer, ds, recipe.evaluation)
    if retention_before is not None and "retention_em" in metrics:
        metrics["forgetting"] = retention_before - metrics["retention_em"]
    if run_id:
        tracker = tracker_for(cfg)
        tracker.log_metrics(run_id, metrics, step=step, once=True)
        tracker.log_table(run_id, rows, "predictions.json")
    return {"metrics": metrics, "predictions": rows}


def base_retention(cfg: PitConfig, model_ref: str, data_ref: str) -> float | None:
    """Exact match of the untouched base model on the retention questions."""
    ds = load_dataset(cfg, data_ref)
    retention = retention_questions(ds, cfg.data)
    if not retention:
        return None
    model, tokenizer = load_model(model_path(cfg, model_ref), cfg.model, device=device())
    ev = Evaluator(model, tokenizer, cfg.eval, cfg.model.max_seq_len)
    return ev.answer(retention, "zero-shot")[0]["exact_match"]
