"""Paired comparison of two recipes on the same questions: is a gap more than noise?

Two recipes answer the same test questions, so the fair test is paired: count
the questions only one of them gets right and ask how likely so lopsided a
split is when neither is better (an exact two-sided sign test, McNemar's test
for small counts). With several seeds a question counts for the recipe whose
mean exact match over the seeds is higher.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import comb


@dataclass(frozen=True)
class PairedTest:
    wins: int  # questions where the first recipe is better
    losses: int  # questions where the second is better
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test: P(a split at least this lopsided | no difference)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_test(a: Mapping[str, float], b: Mapping[str, float]) -> PairedTest:
    """Compare per-question scores (qa_id -> mean exact match, 0-1) on shared questions."""
    shared = a.keys() & b.keys()
    wins = sum(1 for q in shared if a[q] > b[q])
    losses = sum(1 for q in shared if a[q] < b[q])
    return PairedTest(wins, losses, sign_test(wins, losses))
