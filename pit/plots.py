"""Figures people would rather look at than read: the perplexity curse and forgetting.

Both take plain numbers (per-epoch metrics, sweep points), so they draw the same
from a live comparison, a results JSON or MLflow's metric history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def close(fig) -> None:
    """Free a figure once it is written: pyplot keeps every open figure alive."""
    _pyplot().close(fig)


def curse_figure(curves: Mapping[str, Sequence[Mapping[str, Any]]], floor: float | None = None):
    """Per recipe, test-document perplexity against exact match, one point per epoch.

    The paper's perplexity curse: documents learned to a perplexity near the floor
    while the facts in them stay out of reach of questions. A recipe that reads
    well moves up as it moves left; one that only memorises moves left alone.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for slug, points in curves.items():
        pts = [p for p in points if p.get("test_doc_ppl") and p.get("exact_match") is not None]
        if not pts:
            continue
        xs = [p["test_doc_ppl"] for p in pts]
        ys = [p["exact_match"] for p in pts]
        (line,) = ax.plot(xs, ys, marker="o", ms=3, label=slug)
        ax.annotate(f"ep {pts[-1].get('epoch', len(pts))}", (xs[-1], ys[-1]), fontsize=7,
                    color=line.get_color(), xytext=(3, 3), textcoords="offset points")
    if floor:
        ax.axvline(floor, color="grey", ls="--", lw=1)
        ax.annotate("floor", (floor, ax.get_ylim()[1] * 0.95), fontsize=8, color="grey")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("test-document perplexity (log scale, learning goes right)")
    ax.set_ylabel("exact match on test questions (%)")
    ax.set_title("Perplexity curse: stored is not extractable")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def forgetting_figure(points: Sequence[Mapping[str, Any]], base_retention: float | None = None,
                      connect: bool = False):
    """Acquisition (new-knowledge EM) against retention (old-world EM), one point per setting.

    Each point carries its label (a recipe, or a replay share: `connect` draws the
    sweep as a line); the dashed line is the
    base model's retention, and the dotted one 90% of it, the usual bar for
    "did not forget".
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    xs = [p["retention_em"] for p in points]
    ys = [p["exact_match"] for p in points]
    ax.plot(xs, ys, marker="o", ls="-" if connect else "none")
    for p, x, y in zip(points, xs, ys, strict=True):
        ax.annotate(str(p.get("label", "")), (x, y), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")
    if base_retention is not None:
        ax.axvline(base_retention, color="grey", ls="--", lw=1, label="base model")
        ax.axvline(0.9 * base_retention, color="grey", ls=":", lw=1, label="90% of base")
        ax.legend(fontsize=8)
    ax.set_xlabel("retention: exact match on held-out old questions (%)")
    ax.set_ylabel("acquisition: exact match on test questions (%)")
    ax.set_title("Learning the new against keeping the old")
    fig.tight_layout()
    return fig
