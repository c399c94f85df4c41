"""Callbacks keep their state in checkpoints: a resume restores evaluation and tracking.

The toy model and batches of `test_checkpoint` train in-process; evaluation
and tracking are the stage runner's own callbacks, tracking writes to a real
MLflow store (SQLite), and the stage is resumed under a new MLflow run, as
when a comparison is started again after it was killed.
"""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient
from test_checkpoint import FP, PEAK, TCFG, setup, toy_epochs

from pit.config import CheckpointConfig
from pit.storage import Store
from pit.tracking import Tracker
from pit.train.callbacks import Checkpointer, EpochEvaluation, EpochTracking, restore
from pit.train.loop import Callback, Position, StageState, train_stage

OFFSET = 10


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, state, loss, kind, lr) -> None:
        if state.position.step == self.step:
            raise Crash


def scorer(model):
    """A score that depends on the weights, so a wrong restore would show."""
    return lambda: {"weight_sum": float(sum(p.detach().sum() for p in model.parameters()))}


def stage_callbacks(store, tracker, run_id, accelerator, model, optimizer, epochs):
    evaluation = EpochEvaluation(scorer(model))
    tracking = EpochTracking(tracker, run_id, OFFSET)
    checkpointing = Checkpointer(
        store, "ckpt", CheckpointConfig(every_steps=3), accelerator=accelerator, model=model,
        optimizer=optimizer, epoch_sizes=[len(e) for e in epochs], fingerprint=FP,
        callbacks=[evaluation, tracking])
    return evaluation, tracking, checkpointing


def curve(client: MlflowClient, run_id: str, name: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))


def test_a_resumed_stage_restores_its_callbacks_and_logs_the_whole_curve_to_a_new_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "callbacks")
    client = MlflowClient(uri)
    epochs = toy_epochs(3, 5)

    accelerator, model, optimizer = setup()
    reference = tracker.start_run("uninterrupted")
    evaluation, *_ = cbs = stage_callbacks(Store(tmp_path / "a"), tracker, reference,
                                           accelerator, model, optimizer, epochs)
    train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer, callbacks=cbs)
    expected = evaluation.history

    store = Store(tmp_path / "b")
    accelerator, model, optimizer = setup()
    killed = tracker.start_run("killed")
    cbs = stage_callbacks(store, tracker, killed, accelerator, model, optimizer, epochs)
    with pytest.raises(Crash):
        train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer,
                    callbacks=[*cbs, CrashAt(12)])
    assert [s for s, _ in curve(client, killed, "weight_sum")] == [11, 12]

    torch.manual_seed(123)
    accelerator, model, optimizer = setup(seed=1)
    again = tracker.start_run("started-again")
    evaluation, tracking, checkpointing = cbs = stage_callbacks(
        store, tracker, again, accelerator, model, optimizer, epochs)
    state = restore(store, "ckpt", FP, tmp_path / "cache", accelerator, model, optimizer, cbs)
    assert state is not None and state.position.step == 12 and state.position.epoch == 2
    assert evaluation.history == {e: expected[e] for e in (1, 2)}
    assert sorted(tracking.logged) == [1, 2]
    assert curve(client, again, "weight_sum") == curve(client, reference, "weight_sum")[:2]

    train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer, state=state, callbacks=cbs)
    assert evaluation.history == expected
    for name in ("weight_sum", "loss_doc", "loss_qa"):
        assert curve(client, again, name) == curve(client, reference, name)
        assert [s for s, _ in curve(client, again, name)] == [11, 12, 13]


def test_a_stage_without_test_documents_records_its_losses_only():
    evaluation = EpochEvaluation(None)
    metrics = {"loss_qa": 0.5}
    evaluation.on_epoch_end(StageState(Position(epoch=1, batch=0, step=5)), metrics)
    assert evaluation.history == {1: {"loss_qa": 0.5}} and evaluation.last == {"loss_qa": 0.5}
    fresh = EpochEvaluation(None)
    fresh.load_state_dict(evaluation.state_dict())
    assert fresh.history == evaluation.history


def test_a_tracker_leaves_the_next_comparisons_tracking_uri_alone(tmp_path, monkeypatch):
    """MLflow's global `set_tracking_uri` writes MLFLOW_TRACKING_URI, which pit obeys."""
    from pit.tracking import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    Tracker(f"sqlite:///{tmp_path / 'first.db'}", "first")
    second = f"sqlite:///{tmp_path / 'second.db'}"
    assert tracking_uri(second, str(tmp_path)) == second
