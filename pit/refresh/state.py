"""What a refresh remembers between months: the dumps it processed, in the artifact store.

The state is the last thing a month writes, once its version is registered
and its aliases set. A month that fails at any point before leaves the
state as it was, so the next run takes the same dump again and resumes:
its snapshot, data set, stages and scores are found by content, its MLflow
run by hash, its model version by dump date and data set fingerprint
(`pit.refresh.registry`). It is published like every output (a folder with
`state.json` and a manifest written last), so a reader never sees half of it.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, Field

from pit.storage import Store

STATE_FILE = "state.json"

Status = Literal["promoted", "rejected", "no-new-dump"]


class MonthRecord(BaseModel):
    """One processed dump: where its data lives, what became of its version."""

    dump_date: str
    month_index: int
    status: Status
    snapshot_key: str
    dataset_key: str | None = None
    dataset_fingerprint: str | None = None
    model_version: str | None = None
    gate_reason: str | None = None
    metrics: dict[str, float | None] = Field(default_factory=dict)
    mlflow_run_id: str | None = None


class RefreshState(BaseModel):
    registered_model: str
    months: list[MonthRecord] = Field(default_factory=list)

    @property
    def last(self) -> MonthRecord | None:
        return self.months[-1] if self.months else None

    @property
    def last_dump(self) -> str | None:
        return self.last.dump_date if self.last else None

    @property
    def base_data(self) -> str | None:
        """The first trained month's data set: the old split the embedded base learns."""
        return next((m.dataset_key for m in self.months if m.dataset_key), None)


def state_key(registered_model: str) -> str:
    return f"refresh/{registered_model}/state"


def load_state(store: Store, registered_model: str) -> RefreshState:
    """The published state, or an empty one before the first month."""
    key = state_key(registered_model)
    if store.read_manifest(key) is None:
        return RefreshState(registered_model=registered_model)
    return RefreshState.model_validate_json(store.read_file(key, STATE_FILE))


def save_state(store: Store, state: RefreshState) -> None:
    key = state_key(state.registered_model)
    with store.staging(key, {"kind": "refresh-state", "months": len(state.months),
                             "last_dump": state.last_dump}) as folder:
        (folder / STATE_FILE).write_text(json.dumps(state.model_dump(), indent=2))
