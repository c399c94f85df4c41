"""Forgetting against acquisition as the replay share varies (pit, demo preset by default).

Every share is a recipe of its own (`pit` whose test-document stage replays
that many old documents per test document), written to a temporary recipes
folder and run in ONE comparison, so all shares start from the same base model
and the same PIT stage (their first stage is one output, trained once). Prints
one row per share, the smallest share that keeps at least 90% of the base
model's retention, and what it costs in new-knowledge exact match against no
replay; saves the acquisition-retention figure. Last line: `ratio=<retention
at that share (or the best share) / the base model's retention>`.

    .venv/bin/python benchmarks/replay_sweep.py --shares 0,0.5,1,2 --out replay/
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def _slug(share: float, with_qa: bool) -> str:
    return f"pit-replay{'-qa' if with_qa else ''}-x{share:g}"


def _recipe(share: float, with_qa: bool) -> str:
    what = "old documents and their questions" if with_qa else "old documents"
    return (f"slug: {_slug(share, with_qa)}\n"
            f"description: PIT replaying {share:g} {what} per test document.\n"
            "group: forgetting\nstages:\n"
            "  - sources: [train_qa, train_docs]\n    epochs: pit_epochs\n"
            "  - sources: [test_docs, {name: train_qa, limit: cpt_qa_count}, "
            f"{{name: replay, share: {share}, with_qa: {str(with_qa).lower()}}}]\n"
            "    epochs: test_doc_epochs\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--shares", default="0,0.5,1,2", help="comma-separated replay shares")
    ap.add_argument("--with-qa", action="store_true",
                    help="replay the old films' QA pairs with their documents")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("replay-sweep"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()

    from pit.cli import quiet_services

    quiet_services()
    from flows.compare import CompareParams, compare_methods
    from pit.plots import forgetting_figure

    shares = [float(s) for s in args.shares.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as recipes:
        for share in shares:
            slug = _slug(share, args.with_qa)
            Path(recipes, f"{slug}.yaml").write_text(_recipe(share, args.with_qa))
        doc = compare_methods(CompareParams.from_slugs(
            [_slug(s, args.with_qa) for s in shares], preset=args.preset, seeds=args.seeds,
            overrides=args.overrides, recipes_dirs=[recipes]))
    base = doc.get("base_retention_em")
    points = []
    print(f"base model retention EM: {base}")
    print(f"{'share':>6} {'new EM':>7} {'retention':>9} {'forgetting':>10}")
    for share in shares:
        res = doc["methods"][_slug(share, args.with_qa)]
        points.append({"label": f"x{share:g}", "share": share, **{
            k: res.get(k) for k in ("exact_match", "retention_em", "forgetting")}})
        print(f"{share:>6g} {res['exact_match']:>7.1f} {res['retention_em']:>9.1f} "
              f"{res['forgetting']:>10.1f}")
    (args.out / "replay_sweep.json").write_text(json.dumps(points, indent=2))
    forgetting_figure(points, base, connect=True).savefig(args.out / "replay_sweep.png", dpi=120)
    none = points[0]
    kept = [p for p in points if base and p["retention_em"] >= 0.9 * base]
    if kept and base:
        best = min(kept, key=lambda p: p["share"])
        print(f"smallest share keeping >=90% of base retention: {best['share']:g} "
              f"(retention {best['retention_em']:.1f} of {base:.1f}); new-knowledge EM "
              f"{best['exact_match']:.1f} against {none['exact_match']:.1f} without replay "
              f"({best['exact_match'] - none['exact_match']:+.1f} points)")
        ratio = best["retention_em"] / base
    else:
        print("no share kept 90% of the base model's retention; try larger shares")
        ratio = max(p["retention_em"] for p in points) / base if base else 0.0
    print(f"figure: {args.out / 'replay_sweep.png'}")
    print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
