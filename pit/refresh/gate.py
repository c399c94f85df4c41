"""The gate a new version passes before it becomes `champion`: enough learned, little forgotten.

Training a model on new documents until it can recite them makes it forget
older knowledge (the paper's open problem: Llama-2 lost about half its
Natural Questions accuracy). A monthly refresh therefore promotes a version
only when it learned the month's facts (its exact match on the month's
held-out questions gained at least `min_gain` points over the champion's)
without losing what the champion knew (its exact match on earlier questions
dropped by at most `max_forgetting` points). A figure that could not be
measured fails the gate: promoting blind is what the gate is there to stop.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """Whether the gate passed, and why, in words that go to the registry and the artifact."""

    passed: bool
    reason: str

    @property
    def status(self) -> str:
        return "promoted" if self.passed else "rejected"


@dataclass(frozen=True)
class Gate:
    """Thresholds in exact-match points (0-100), as the paper reports its figures."""

    min_gain: float = 0.0
    max_forgetting: float = 5.0

    def judge(self, new_em_gain: float | None, forgetting: float | None) -> Verdict:
        failed, held = [], []
        if new_em_gain is None:
            failed.append("the gain on the month's questions was not measured (no test QA)")
        elif new_em_gain < self.min_gain:
            failed.append(f"new-knowledge EM gain {new_em_gain:+.1f} is below the minimum "
                          f"{self.min_gain:+.1f}")
        else:
            held.append(f"new-knowledge EM gain {new_em_gain:+.1f} >= {self.min_gain:+.1f}")
        if forgetting is None:
            failed.append("forgetting was not measured (no earlier or probe questions: set "
                          "data.retention_questions above 0 and give --old-category)")
        elif forgetting > self.max_forgetting:
            failed.append(f"forgetting {forgetting:.1f} exceeds the maximum "
                          f"{self.max_forgetting:.1f}")
        else:
            held.append(f"forgetting {forgetting:.1f} <= {self.max_forgetting:.1f}")
        if failed:
            return Verdict(False, "; ".join(failed))
        return Verdict(True, "; ".join(held))
