"""A model scored on a month: what it learned (acquisition) and what it kept (retention).

Both the champion (the model the month starts from) and the challenger (the
model the recipe made) are scored the same way, zero-shot, greedy, exact
match after normalisation, so their difference is the month's gain and its
forgetting:

- `new_em`: the month's held-out questions (the test split, never trained on);
- `retention_em`: earlier questions, all together: a sample of earlier
  months' questions (`delta.earlier_questions`) and the fixed probe set of
  old-world questions held out of all training (`data.retention_questions`);
  each part is kept too (`retention_earlier_em`, `retention_probe_em`).

Scores are published in the artifact store under a hash of the model, the
data set and the evaluation settings, so a month started again after a crash
does not score the same model twice.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from pit.artifacts import model_path, store_for
from pit.config import PitConfig
from pit.data.source import load_dataset
from pit.data.views import eval_questions, retention_questions
from pit.device import device
from pit.eval.evaluator import Evaluator
from pit.modeling import load_model
from pit.refresh.delta import earlier_questions
from pit.storage import fingerprint

_HASH_CHARS = 16


def scores_key(cfg: PitConfig, model_ref: str, dataset_fingerprint: str) -> str:
    h = fingerprint({"step": "refresh-scores", "eval": cfg.eval, "data": cfg.data,
                     "max_seq_len": cfg.model.max_seq_len},
                    exclude=["eval.batch_size", "data.source"],
                    inputs={"model": model_ref, "dataset": dataset_fingerprint})
    return f"scores/refresh-{h[:_HASH_CHARS]}"


def _mean(rows: list[dict[str, Any]]) -> float | None:
    return statistics.fmean(r["exact_match"] for r in rows) if rows else None


def month_scores(cfg: PitConfig, model_ref: str, data_ref: str) -> dict[str, float | None]:
    """`new_em`, `retention_em` and its two parts (0-100; None where there is nothing to ask)."""
    store = store_for(cfg)
    ds = load_dataset(cfg, data_ref)
    key = scores_key(cfg, model_ref, ds.fingerprint)
    done = store.cached(key)
    if done is not None:
        return dict(done["scores"])
    model, tokenizer = load_model(model_path(cfg, model_ref), cfg.model, device=device())
    ev = Evaluator(model, tokenizer, cfg.eval, cfg.model.max_seq_len)
    new = eval_questions(ds, cfg.data)
    probe = retention_questions(ds, cfg.data)
    earlier = earlier_questions(ds, cfg.data)
    new_metrics, _ = ev.answer(new, "zero-shot") if new else ({}, [])
    rows = ev.answer(probe + earlier, "zero-shot")[1] if probe or earlier else []
    scores = {
        "new_em": new_metrics.get("exact_match"),
        "new_answer_recall": new_metrics.get("answer_recall"),
        "retention_em": _mean(rows),
        "retention_probe_em": _mean(rows[: len(probe)]),
        "retention_earlier_em": _mean(rows[len(probe):]),
        "new_questions": float(len(new)),
        "retention_questions": float(len(rows)),
    }
    with store.staging(key, {"kind": "refresh-scores", "model": model_ref,
                             "dataset_fingerprint": ds.fingerprint, "scores": scores}) as folder:
        (folder / "scores.json").write_text(json.dumps(scores, indent=2))
    return scores


def month_figures(champion: dict[str, float | None], challenger: dict[str, float | None]
                  ) -> dict[str, float | None]:
    """The four figures of the results contract: acquisition, its gain, retention, forgetting."""
    def minus(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    return {"new_em": challenger["new_em"],
            "new_em_gain": minus(challenger["new_em"], champion["new_em"]),
            "retention_em": challenger["retention_em"],
            "forgetting": minus(champion["retention_em"], challenger["retention_em"])}
