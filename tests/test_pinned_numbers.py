"""Pinned numbers: the smoke preset's `cpt` recipe gives the very losses and scores it gave.

As in torchtune's recipe tests, a recipe runs end to end through pit's own
steps (`build_dataset`, `build_base`, the stage runner, `evaluate`) on the
CPU (even where a GPU is present), and its first five optimiser-step losses
and final scores are compared with numbers written below. Any unintended
change to the data, the model, batching, the schedule or the evaluation
moves them. The same stage, killed after step 3 and resumed from its step-2
checkpoint by a fresh runner, must land on the same numbers: the resume
replays step 3 and goes on as if nothing had happened.

The smoke model is too small to answer any question, so exact match is 0;
test-document perplexity is pinned beside it, since it moves with every
change to the final weights.

To re-pin after an intended change (world, model, recipe, preset, training
loop, or a torch upgrade that moves the last digits), run

    .venv/bin/pytest -q tests/test_pinned_numbers.py

and copy the measured values, which each failure message prints in full,
into the constants below. The resume test must then pass unchanged.
"""

from __future__ import annotations

import pytest
import torch

from pit.artifacts import store_for
from pit.base import build_base
from pit.config import PitConfig
from pit.config_sources import load_config
from pit.data.source import build_dataset, load_dataset
from pit.data.views import eval_questions
from pit.evaluation import evaluate
from pit.recipe import select_recipes
from pit.train.checkpoint import list_checkpoints, step_of
from pit.train.loop import Callback, StageState
from pit.train.runner import StageJob, StageRunner

pytestmark = pytest.mark.slow

# Two documents and two QA pairs per batch: four steps per epoch, eight in the stage.
# Scoring once at the stage's end only skips the scores of the first epoch.
STAGE = ["train.doc_batch_size=2", "train.qa_batch_size=4", "eval.every_epochs=0"]

PINNED_LOSSES = [6.337352752685547, 6.2667717933654785, 6.277394771575928,
                 6.190879821777344, 6.211407661437988]
PINNED_EXACT_MATCH = 0.0
PINNED_TEST_DOC_PPL = 471.7771849289643

KILLED_AFTER = 3
EVERY_STEPS = 2


class Killed(Exception):
    """Stands in for a crash of the training process."""


class LossRecorder(Callback):
    """Records each step's loss by step number; raises `Killed` after step `kill_after`."""

    def __init__(self, kill_after: int | None = None) -> None:
        self.kill_after = kill_after
        self.losses: dict[int, float] = {}

    def on_step_end(self, state: StageState, loss: float, kind: str, lr: float) -> None:
        self.losses[state.position.step] = loss
        if state.position.step == self.kill_after:
            raise Killed


class RecordingRunner(StageRunner):
    """The stage runner with a loss recorder after its own callbacks (checkpoints first)."""

    def __init__(self, job: StageJob, recorder: LossRecorder) -> None:
        super().__init__(job)
        self.recorder = recorder

    def _callbacks(self, ds):
        return [*super()._callbacks(ds), self.recorder]


@pytest.fixture(scope="module", autouse=True)
def cpu_only():
    """The numbers are the CPU's: a GPU, where there is one, would move their last digits."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.cuda, "is_available", lambda: False)
        yield


@pytest.fixture(scope="module")
def prepared(cpu_only, tmp_path_factory, tiny_overrides):
    work = tmp_path_factory.mktemp("pinned")
    cfg = load_config("smoke", None, [*tiny_overrides, *STAGE, f"workdir={work}",
                                      f"storage.root={work / 'artifacts'}",
                                      f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}",
                                      "checkpoint.enabled=false"])
    data = build_dataset(cfg)
    base = build_base(cfg, data)
    return cfg, data, base


def _job(cfg: PitConfig, data: str, base: str) -> StageJob:
    recipe = select_recipes(["cpt"])[0]
    assert len(recipe.stages) == 1
    return StageJob(config=cfg, recipe=recipe, index=0, model_ref=base, data_ref=data)


def _final(cfg: PitConfig, job: StageJob, key: str) -> dict[str, float]:
    return evaluate(cfg, job.recipe, key, job.data_ref, None, None)["metrics"]


def _one_question(cfg: PitConfig, data: str) -> float:
    """Exact match (a percentage) moves in steps of one test question: a pinned EM's tolerance."""
    return 100 / len(eval_questions(load_dataset(cfg, data), cfg.data))


def test_cpt_on_the_smoke_preset_gives_the_pinned_losses_and_final_scores(prepared):
    cfg, data, base = prepared
    job = _job(cfg, data, base)
    recorder = LossRecorder()
    key, _ = RecordingRunner(job, recorder).run()
    assert sorted(recorder.losses) == list(range(1, 9))
    first = [recorder.losses[s] for s in range(1, 6)]
    assert first == pytest.approx(PINNED_LOSSES, rel=1e-4), f"measured losses {first!r}"

    metrics = _final(cfg, job, key)
    assert metrics["exact_match"] == pytest.approx(
        PINNED_EXACT_MATCH, abs=_one_question(cfg, data)), f"measured {metrics!r}"
    assert metrics["test_doc_ppl"] == pytest.approx(PINNED_TEST_DOC_PPL, rel=1e-3), \
        f"measured {metrics!r}"


def test_cpt_killed_after_step_3_resumes_from_its_checkpoint_to_the_pinned_numbers(prepared):
    cfg, data, base = prepared
    cfg = cfg.model_copy(update={"checkpoint": cfg.checkpoint.model_copy(
        update={"enabled": True, "every_steps": EVERY_STEPS})})
    job = _job(cfg, data, base)
    store = store_for(cfg)

    killed = LossRecorder(kill_after=KILLED_AFTER)
    with pytest.raises(Killed):
        RecordingRunner(job, killed).run()
    assert sorted(killed.losses) == [1, 2, 3]
    assert [killed.losses[s] for s in (1, 2, 3)] == pytest.approx(PINNED_LOSSES[:3], rel=1e-4)

    resumed = LossRecorder()
    runner = RecordingRunner(job, resumed)
    runner.setup()
    assert [step_of(k) for k in list_checkpoints(store, runner.out.checkpoints)] == [2]
    assert runner.state.position.step == 2
    runner.fit()
    key, _ = runner.publish()
    assert sorted(resumed.losses) == list(range(3, 9))
    after = [resumed.losses[s] for s in (3, 4, 5)]
    assert after == pytest.approx(PINNED_LOSSES[2:], rel=1e-4), f"measured losses {after!r}"

    metrics = _final(cfg, job, key)
    assert metrics["exact_match"] == pytest.approx(
        PINNED_EXACT_MATCH, abs=_one_question(cfg, data)), f"measured {metrics!r}"
    assert metrics["test_doc_ppl"] == pytest.approx(PINNED_TEST_DOC_PPL, rel=1e-3), \
        f"measured {metrics!r}"
