"""Signals: a training stage asked to stop saves a checkpoint, exits non-zero, leaves nothing.

The toy stage of `test_checkpoint` trains in-process or, for real signals, in
a process of its own (`stop_target.py`); the last test sends SIGTERM to a
real `pit compare` whose stage trains through `accelerate launch`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from test_checkpoint import PEAK, TCFG, checkpointer, setup, toy_epochs, weights

from pit.errors import TrainingStopped
from pit.processes import identity
from pit.storage import Store
from pit.train import signals
from pit.train.callbacks import GracefulStop
from pit.train.checkpoint import latest_checkpoint, list_checkpoints, step_of
from pit.train.loop import Callback, train_stage
from pit.train.signals import LAUNCHER_ENV, StopRequest, forwarding

ROOT = Path(__file__).resolve().parents[1]
TARGET = Path(__file__).with_name("stop_target.py")


class AskAt(Callback):
    """Requests a stop during step `step`, after the callbacks that run before it."""

    def __init__(self, request: StopRequest, step: int) -> None:
        self.request, self.step = request, step

    def on_step_end(self, state, loss, kind, lr) -> None:
        if state.position.step == self.step:
            self.request.set("a test")


def _stop_at(tmp_path: Path, step: int, asked_after_stop: bool = False):
    store = Store(str(tmp_path / "store"))
    epochs = toy_epochs()
    accelerator, model, optimizer = setup()
    request = StopRequest()
    ck = checkpointer(store, accelerator, model, optimizer, epochs, every_steps=3)
    stop = GracefulStop(request, accelerator, ck, "toy stage", sum(len(e) for e in epochs))
    ask = AskAt(request, step)
    order = [ck, stop, ask] if asked_after_stop else [ask, ck, stop]
    with pytest.raises(TrainingStopped) as err:
        train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer, callbacks=order)
    return store, ck, str(err.value)


def test_a_stop_request_checkpoints_the_step_it_is_seen_at_and_raises(tmp_path):
    store, ck, message = _stop_at(tmp_path, 4)
    assert [step_of(k) for k in ck.saved] == [3, 4]
    assert latest_checkpoint(store, "ckpt").step == 4
    assert "toy stage stopped on a test after step 4 of 15" in message
    assert store.url(ck.saved[-1]) in message and "run the same command again" in message


def test_a_request_arriving_mid_step_is_honoured_at_the_next_boundary_without_a_double_save(
        tmp_path):
    store, ck, message = _stop_at(tmp_path, 5, asked_after_stop=True)
    # asked during step 5 after the stop callback had looked: seen at step 6, which the
    # every-3-steps checkpoint has just saved, so it is not saved twice (5 ends an epoch)
    assert [step_of(k) for k in ck.saved] == [3, 5, 6]
    assert "after step 6 of 15" in message


def test_a_stage_stopped_and_resumed_ends_with_the_uninterrupted_weights(tmp_path):
    store, _, _ = _stop_at(tmp_path, 7)
    epochs = toy_epochs()
    accelerator, model, optimizer = setup()
    train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer)
    reference = weights(model)

    from pit.train.callbacks import restore

    accelerator, model, optimizer = setup(seed=1)
    state = restore(store, "ckpt", "f" * 64, tmp_path / "cache", accelerator, model, optimizer,
                    [])
    assert state.position.step == 7
    train_stage(model, epochs, TCFG, PEAK, 0, accelerator, optimizer, state=state)
    assert all(torch.equal(v, reference[k]) for k, v in weights(model).items())


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != LAUNCHER_ENV}
    return {**env, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}",
            "OMP_NUM_THREADS": "1", **extra}


def _start_target(tmp_path: Path, env: dict[str, str], seconds: float = 0.2,
                  **popen) -> tuple[subprocess.Popen, Path]:
    result = tmp_path / "result.json"
    proc = subprocess.Popen([sys.executable, str(TARGET), str(tmp_path / "store"), str(result),
                             str(seconds)], env=env, **popen)
    deadline = time.time() + 120
    while not result.is_file():
        assert proc.poll() is None, "the toy stage exited before its first step"
        assert time.time() < deadline, "the toy stage did not take a step in 120 s"
        time.sleep(0.05)
    return proc, result


def test_sigterm_to_a_training_process_saves_a_checkpoint_and_exits_non_zero(tmp_path):
    # launched as `pit.train.launch` is: its launcher (here, this test) named in the environment
    proc, result = _start_target(tmp_path, _env(**{LAUNCHER_ENV: identity()}))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 2
    outcome = json.loads(result.read_text())
    stopped_at = step_of(outcome["saved"][-1])
    assert f"stopped on SIGTERM after step {stopped_at} of 200" in outcome["stopped"]
    store = Store(str(tmp_path / "store"))
    assert latest_checkpoint(store, "ckpt").step == stopped_at


def test_a_training_process_whose_launcher_died_checkpoints_and_exits(tmp_path):
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        env = _env(**{LAUNCHER_ENV: identity(launcher.pid)})
        proc, result = _start_target(tmp_path, env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
    finally:
        launcher.kill()
        launcher.wait()
    # Its output pipe outlives the launcher here; in production it dies with it.
    proc.stdout.close()
    assert proc.wait(60) == 2
    outcome = json.loads(result.read_text())
    assert f"the death of its launcher (process {launcher.pid})" in outcome["stopped"]
    store = Store(str(tmp_path / "store"))
    assert latest_checkpoint(store, "ckpt").step == step_of(outcome["saved"][-1])


@pytest.mark.slow
def test_sigterm_to_one_of_two_ranks_stops_both_at_the_same_step_with_one_checkpoint(tmp_path):
    store_dir, result = tmp_path / "store", tmp_path / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           str(TARGET), str(store_dir), str(result), "0.2"]
    proc = subprocess.Popen(cmd, env=_env(**{LAUNCHER_ENV: identity()}),
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    ranks = [result.with_name(f"{result.name}.{r}") for r in (0, 1)]
    try:
        deadline = time.time() + 180
        while not all(r.is_file() for r in ranks):
            assert proc.poll() is None and time.time() < deadline, "the ranks did not start"
            time.sleep(0.05)
        family = psutil.Process(proc.pid).children(recursive=True)
        (second,) = [p for p in family if p.environ().get("RANK") == "1"]
        second.send_signal(signal.SIGTERM)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    first, other = (json.loads(r.read_text()) for r in ranks)
    step = step_of(first["saved"][-1])
    assert "stopped on a stop request of another process after step" in first["stopped"]
    assert f"stopped on SIGTERM after step {step} of 200" in other["stopped"]
    assert latest_checkpoint(Store(str(store_dir)), "ckpt").step == step
    _, left = psutil.wait_procs(family, timeout=30)
    assert left == []


GROUP = """
import signal, subprocess, sys, time
from pathlib import Path
def leave(signum, frame):
    Path(sys.argv[1]).write_text(signal.Signals(signum).name)
    sys.exit(0)
signal.signal(signal.SIGTERM, leave)
child = subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1] + ".ready"])
time.sleep(600)
"""
STUBBORN = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(600)
"""


def test_forwarding_sends_sigterm_to_the_child_group_and_then_to_the_handler_before_it(
        tmp_path, monkeypatch):
    monkeypatch.setattr(signals, "STOP_GRACE_SECONDS", 3.0)
    got = tmp_path / "got"
    proc = subprocess.Popen([sys.executable, "-c", GROUP, str(got), STUBBORN],
                            start_new_session=True)
    ready = Path(f"{got}.ready")
    while not ready.is_file() or not ready.read_text():
        time.sleep(0.05)
    stubborn = psutil.Process(int(ready.read_text()))
    seen: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        with forwarding(proc):
            os.kill(os.getpid(), signal.SIGTERM)
            assert seen == []  # the launcher's own handler waits for the group to stop
            proc.wait(30)
    finally:
        signal.signal(signal.SIGTERM, before)
    assert got.read_text() == "SIGTERM"
    assert seen == [signal.SIGTERM]
    # a member that ignores SIGTERM is killed once the grace has passed
    assert not stubborn.is_running() or stubborn.status() == psutil.STATUS_ZOMBIE


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.slow
def test_sigterm_to_pit_compare_stops_its_stage_with_a_checkpoint_and_leaves_no_process(
        tmp_path):
    from mlflow.tracking import MlflowClient

    work = tmp_path / "work"
    env = _env(PREFECT_HOME=str(tmp_path / "prefect"), PIT_PROGRESS="0")
    env = {k: v for k, v in env.items() if not k.startswith("MLFLOW_TRACKING")}
    cmd = [sys.executable, "-m", "pit.cli", "compare", "--preset", "smoke", "--methods", "cpt",
           "--set", f"workdir={work}", "--set", "train.launcher=process",
           "--set", "checkpoint.every_steps=2", "--set", "train.doc_batch_size=1",
           "--set", "train.test_doc_epochs=4"]
    log = (tmp_path / "compare.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=ROOT)
    try:
        checkpoints = work / "artifacts" / "checkpoints"
        deadline = time.time() + 400
        while not list(checkpoints.glob("*/step-*/MANIFEST.json")):
            assert proc.poll() is None, (tmp_path / "compare.log").read_text()
            assert time.time() < deadline, "no checkpoint within 400 s"
            time.sleep(0.1)
        family = _descendants(proc.pid)
        assert any("pit.train.launch" in " ".join(p.cmdline()) for p in family)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    out = (tmp_path / "compare.log").read_text()
    assert rc != 0, out
    assert "SIGTERM received: forwarded to the training processes" in out
    line = next(ln for ln in out.splitlines() if "stopped on SIGTERM after step" in ln)
    step = int(line.split("after step ")[1].split()[0])
    (prefix,) = checkpoints.iterdir()
    store = Store(str(work / "artifacts"))
    key = f"checkpoints/{prefix.name}"
    assert latest_checkpoint(store, key).step == step
    assert step_of(list_checkpoints(store, key)[-1]) == step
    assert str(prefix / f"step-{step:09d}") in line
    time.sleep(1)
    left = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], [p.cmdline() for p in left]
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("pit")
    runs = client.search_runs([exp.experiment_id])
    assert runs and {r.info.status for r in runs} == {"FAILED"}
