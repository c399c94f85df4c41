"""The monthly knowledge refresh: learn each new dump, promote only what passes the gate.

The pieces a refresh is made of, each runnable on its own (the flow in
`flows/refresh.py` composes them): `mirror` finds and fetches the month's
dump, `snapshot` builds it as `pit data wiki` does, `delta` cuts the month's
data set, `scores` measures acquisition and retention, `gate` judges them,
`registry` registers and promotes versions, `state` remembers the months,
`outcome` is the results document and the report. `scores` and `registry`
load torch and MLflow, so they are imported from their modules, not here:
`pit refresh --help` stays quick.
"""

from pit.refresh.delta import build_month, changes, earlier_questions, month_dataset
from pit.refresh.gate import Gate, Verdict
from pit.refresh.mirror import fetch_dump, newer_dump
from pit.refresh.outcome import FIGURES, Outcome
from pit.refresh.params import REFRESH_RECIPES, RefreshParams
from pit.refresh.snapshot import build_snapshot
from pit.refresh.state import MonthRecord, RefreshState, load_state, save_state

__all__ = [
    "FIGURES",
    "REFRESH_RECIPES",
    "Gate",
    "MonthRecord",
    "Outcome",
    "RefreshParams",
    "RefreshState",
    "Verdict",
    "build_month",
    "build_snapshot",
    "changes",
    "earlier_questions",
    "fetch_dump",
    "load_state",
    "month_dataset",
    "newer_dump",
    "save_state",
]
