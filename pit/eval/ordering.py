"""The paper's claims as pairs of recipes, and whether a run's gap on each is beyond noise.

A gap counts as real only when it clears both kinds of noise: the questions (a
paired sign test over the test questions both recipes answered) and the seeds
(with several seeds, the mean gap must exceed twice the spread of the per-seed
gaps). Everything else is reported as "within noise", whichever way it points.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from pit.eval.paired import paired_test

# (better, worse) as the paper orders them (Jiang et al., Tables 1-3).
PAPER_CLAIMS: tuple[tuple[str, str], ...] = (
    ("open-book", "pit++"),
    ("pit++", "mix-all"),
    ("pit", "mix-all"),
    ("mix-all", "cpt-it"),
    ("cpt-it", "cpt"),
    ("pit", "pit-qa-only"),
    ("pit", "pit-qa-then-docs"),
    ("pit", "cpt-it"),
    ("pit-cross", "cpt-it-cross"),
    ("pit-before-interleaved", "pit-before-grouped"),
)


@dataclass(frozen=True)
class Gap:
    better: str
    worse: str
    delta: float  # mean exact match of `better` minus that of `worse`, in points
    seed_spread: float | None  # standard deviation of the per-seed gaps
    wins: int
    losses: int
    p_value: float

    @property
    def verdict(self) -> str:
        beyond_seeds = self.seed_spread is None or abs(self.delta) > 2 * self.seed_spread
        if self.p_value < 0.05 and beyond_seeds:
            return "as in paper" if self.delta > 0 else "reversed"
        return "within noise"

    def as_dict(self) -> dict[str, Any]:
        """The gap as the results JSON and MLflow record it, verdict included."""
        return {**asdict(self), "verdict": self.verdict}


def _per_seed_em(res: dict[str, Any]) -> dict[int, float]:
    return {s["seed"]: s["exact_match"] for s in res.get("per_seed", [])
            if s.get("exact_match") is not None}


def judge(methods: dict[str, dict[str, Any]],
          claims: tuple[tuple[str, str], ...] = PAPER_CLAIMS) -> list[Gap]:
    """Every claim whose two recipes ran, with its gap, spread and paired test."""
    gaps = []
    for better, worse in claims:
        a, b = methods.get(better), methods.get(worse)
        if not a or not b or a.get("exact_match") is None or b.get("exact_match") is None:
            continue
        ea, eb = _per_seed_em(a), _per_seed_em(b)
        diffs = [ea[s] - eb[s] for s in ea.keys() & eb.keys()]
        spread = statistics.stdev(diffs) if len(diffs) > 1 else None
        test = paired_test(a.get("per_question") or {}, b.get("per_question") or {})
        gaps.append(Gap(better, worse, a["exact_match"] - b["exact_match"], spread,
                        test.wins, test.losses, test.p_value))
    return gaps
