"""Results of a comparison: the JSON contract, the table beside the paper, the plot."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from pit.recipe import Recipe

METRICS = ("exact_match", "answer_recall", "rouge_l", "f1", "test_doc_ppl", "retention_em",
           "forgetting", "train_qa_em", "cloze_recall", "test_doc_ppl_floor")


def aggregate(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of each metric, with the spread when there is more than one seed."""
    out: dict[str, Any] = {}
    for m in METRICS:
        values = [s["metrics"][m] for s in per_seed if s["metrics"].get(m) is not None]
        out[m] = statistics.fmean(values) if values else None
        if len(values) > 1:
            out[f"{m}_std"] = statistics.stdev(values)
    out["per_seed"] = [{"seed": s["seed"], "mlflow_run_id": s["run_id"], **s["metrics"]}
                       for s in per_seed]
    questions = [s.get("per_question") or {} for s in per_seed]
    if questions and questions[0]:
        out["per_question"] = {q: statistics.fmean(p.get(q, 0.0) for p in questions)
                               for q in questions[0]}
    out["curve"] = per_seed[0].get("curve") or [] if per_seed else []
    out["mlflow_run_id"] = per_seed[0]["run_id"] if per_seed else None
    return out


def results_document(preset: str, model: str, dataset: dict[str, Any],
                     methods: dict[str, dict[str, Any]], parent_run_id: str | None
                     ) -> dict[str, Any]:
    return {"preset": preset, "model": model, "dataset": dataset, "methods": methods,
            "mlflow_parent_run_id": parent_run_id}


def write_results(path: str | Path, doc: dict[str, Any]) -> Path:
    """Write the results JSON atomically: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False))
    tmp.replace(path)
    return path


def comparison_rows(methods: dict[str, dict[str, Any]], recipes: dict[str, Recipe]
                    ) -> list[dict[str, Any]]:
    rows = []
    for slug, res in methods.items():
        paper = recipes[slug].paper if slug in recipes else None
        rows.append({
            "recipe": slug,
            **{m: res.get(m) for m in METRICS},
            "paper_exact_match": paper.exact_match if paper else None,
            "paper_answer_recall": paper.answer_recall if paper else None,
            "paper_rouge_l": paper.rouge_l if paper else None,
        })
    return rows


def _fmt(v: Any, std: Any = None, digits: int = 1) -> str:
    if v is None:
        return "-"
    s = f"{v:.{digits}f}"
    return f"{s}±{std:.{digits}f}" if std is not None else s


def render_table(methods: dict[str, dict[str, Any]], recipes: dict[str, Recipe], title: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left",
                  caption="paper: Llama-2 7B on Wiki2023 films (Jiang et al., ACL 2024)")
    for col in ("recipe", "EM", "recall", "ROUGE-L", "F1", "doc ppl", "retention", "forgetting",
                "paper EM / recall / RL"):
        table.add_column(col, justify="left" if col == "recipe" else "right", no_wrap=True)
    for row in comparison_rows(methods, recipes):
        res = methods[row["recipe"]]
        paper = " / ".join(_fmt(row[k]) for k in
                           ("paper_exact_match", "paper_answer_recall", "paper_rouge_l"))
        table.add_row(
            row["recipe"],
            _fmt(res.get("exact_match"), res.get("exact_match_std")),
            _fmt(res.get("answer_recall"), res.get("answer_recall_std")),
            _fmt(res.get("rouge_l"), res.get("rouge_l_std")),
            _fmt(res.get("f1")),
            _fmt(res.get("test_doc_ppl"), digits=2),
            _fmt(res.get("retention_em")),
            _fmt(res.get("forgetting")),
            paper,
        )
    return table


def comparison_figure(methods: dict[str, dict[str, Any]], recipes: dict[str, Recipe]):
    """Exact match per recipe beside the paper's, and retention: what people look at first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = comparison_rows(methods, recipes)
    names = [r["recipe"] for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8, 0.9 * len(names) + 4), 4.5))
    x = range(len(names))
    ax1.bar([i - 0.2 for i in x], [r["exact_match"] or 0 for r in rows], 0.4, label="this run")
    ax1.bar([i + 0.2 for i in x], [r["paper_exact_match"] or 0 for r in rows], 0.4,
            label="paper (Llama-2 7B)", alpha=0.6)
    ax1.set_xticks(list(x), names, rotation=60, ha="right")
    ax1.set_ylabel("exact match (%)")
    ax1.set_title("Test questions, closed book")
    ax1.legend()
    ax2.bar(list(x), [r["retention_em"] or 0 for r in rows], color="tab:green")
    ax2.set_xticks(list(x), names, rotation=60, ha="right")
    ax2.set_ylabel("exact match on old-world questions (%)")
    ax2.set_title("Retention (forgetting = base - this)")
    fig.tight_layout()
    return fig


def figures(methods: dict[str, dict[str, Any]], recipes: dict[str, Recipe],
            base_retention: float | None) -> dict[str, Any]:
    """Every figure of a comparison, by file name: what MLflow and the results folder get."""
    from pit.plots import curse_figure, forgetting_figure

    out = {"comparison.png": comparison_figure(methods, recipes)}
    curves = {slug: res["curve"] for slug, res in methods.items() if res.get("curve")}
    if curves:
        floors = [p.get("test_doc_ppl_floor") for c in curves.values() for p in c]
        out["perplexity_curse.png"] = curse_figure(curves, next((f for f in floors if f), None))
    points = [{"label": slug, "exact_match": res["exact_match"],
               "retention_em": res["retention_em"]} for slug, res in methods.items()
              if res.get("retention_em") is not None and res.get("exact_match") is not None]
    if points:
        out["acquisition_retention.png"] = forgetting_figure(points, base_retention)
    return out


def render_gaps(gaps: list[dict[str, Any]], chance: float | None, n_questions: int | None,
                seeds: int):
    """The paper's claims as the results JSON holds them (`Gap.as_dict`), under the main table."""
    from rich.table import Table

    notes = []
    if n_questions:
        notes.append(f"{n_questions} test questions: one question is {100 / n_questions:.2f} "
                     "points")
    if chance is not None:
        notes.append(f"chance (most common answer per relation) {chance:.1f} EM")
    notes.append(f"{seeds} seed(s); a gap is real when the paired sign test over questions "
                 "gives p < 0.05" + (" and it exceeds twice the spread of the per-seed gaps"
                                     if seeds > 1 else ""))
    table = Table(title="the paper's ordering, gap by gap", title_justify="left",
                  caption="; ".join(notes), caption_justify="left")
    for col in ("claim", "gap (EM points)", "seed spread", "questions won/lost", "p", "verdict"):
        table.add_column(col, justify="left" if col in ("claim", "verdict") else "right")
    for g in gaps:
        colour = {"as in paper": "green", "reversed": "red"}.get(g["verdict"], "yellow")
        table.add_row(f"{g['better']} > {g['worse']}", f"{g['delta']:+.1f}",
                      _fmt(g["seed_spread"]), f"{g['wins']}/{g['losses']}",
                      f"{g['p_value']:.3f}", f"[{colour}]{g['verdict']}[/]")
    return table
