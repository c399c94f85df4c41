"""MLflow tracking: one experiment per comparison, a parent run, a nested run per recipe.

Runs are created by id and written to through `MlflowClient`, never through
the global "active run", so a Prefect task (or its retry, or another process)
can keep writing to the run it was handed: the run id is what survives.
Which run a comparison writes to, a new one or one an earlier attempt left
behind, is decided in `pit.runs`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from pit.config import PitConfig
from pit.storage.leftovers import file_lock

PARENT_TAG = "mlflow.parentRunId"


def tracking_uri(configured: str | None, workdir: str) -> str:
    """MLFLOW_TRACKING_URI wins, as MLflow users expect; then config; then a SQLite file."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if configured:
        return configured
    path = Path(workdir).resolve() / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI (None for a server or in-memory one)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    path = uri[len(prefix):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _client(uri: str) -> MlflowClient:
    """A client of `uri`; a SQLite file is created and migrated by one process at a time.

    MLflow creates a missing SQLite database and runs its alembic migrations
    when a client first opens it. Two comparisons started together on one
    work folder would both migrate the same new file, and the second fails
    (`duplicate column name`). Opening it under a lock beside the file makes
    the second wait and find it migrated; later opens only read its schema.
    """
    db = _sqlite_file(uri)
    if db is None:
        return MlflowClient(tracking_uri=uri)
    with file_lock(db.with_name(f".{db.name}.lock")):
        return MlflowClient(tracking_uri=uri)


class Tracker:
    def __init__(self, uri: str, experiment: str, artifact_location: str | None = None) -> None:
        self.uri = uri
        self.client = _client(uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                exp_id = self.client.create_experiment(experiment,
                                                       artifact_location=artifact_location)
            except MlflowException:
                # Another run created it between the lookup and the create: use theirs.
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id

    def start_run(self, name: str, parent_id: str | None = None,
                  tags: dict[str, str] | None = None) -> str:
        tags = dict(tags or {})
        if parent_id:
            tags[PARENT_TAG] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return run.info.run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = {k: (v if isinstance(v, str) else json.dumps(v, default=str))[:6000]
                for k, v in _flatten(params).items()}
        existing = self.client.get_run(run_id).data.params
        new = [Param(k, v) for k, v in flat.items() if k not in existing]
        for i in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int | None = None,
                    once: bool = False) -> None:
        """Log metrics at `step`; with `once`, skip keys that already have a value there.

        `once` keeps a retried task or a final evaluation that repeats the last
        epoch's from writing the same step twice.
        """
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()
                 if v is not None and v == v
                 and not (once and (step or 0) in self.logged_steps(run_id, k))]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def logged_steps(self, run_id: str, key: str) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run_id, key)}

    def log_table(self, run_id: str, rows: list[dict[str, Any]], name: str) -> None:
        if rows:
            data = {k: [r.get(k) for r in rows] for k in rows[0]}
            self.client.log_table(run_id, data=data, artifact_file=name)

    def log_dict(self, run_id: str, obj: Any, name: str) -> None:
        self.client.log_dict(run_id, obj, name)

    def log_figure(self, run_id: str, fig, name: str) -> None:
        self.client.log_figure(run_id, fig, name)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, v)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def tagged_runs(self, key: str, value: str, parent_id: str | None = None) -> list[Run]:
        """Runs of this experiment whose tag `key` is `value` (under `parent_id`), newest first.

        `value` and `parent_id` are hex (hashes, run ids): nothing in them needs quoting.
        """
        query = f"tags.`{key}` = '{value}'"
        if parent_id:
            query += f" and tags.`{PARENT_TAG}` = '{parent_id}'"
        return list(self.client.search_runs([self.experiment_id], query,
                                            order_by=["attributes.start_time DESC"]))

    def running_runs(self) -> list[Run]:
        """Runs of this experiment in state RUNNING."""
        return list(self.client.search_runs([self.experiment_id],
                                            "attributes.status = 'RUNNING'"))

    def reopen(self, run_id: str) -> None:
        """Set a run that ended (or was left RUNNING) to RUNNING again, to write more to it."""
        self.client.update_run(run_id, status="RUNNING")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def tracker_for(cfg: PitConfig) -> Tracker:
    """The tracker of a comparison's config: its URI resolved as `tracking_uri` does."""
    return Tracker(tracking_uri(cfg.tracking.tracking_uri, cfg.workdir), cfg.tracking.experiment)
