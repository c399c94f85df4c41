"""The GPU path's switches and what they report, checked where they run: on the CPU.

bf16 autocast, activation checkpointing and the attention choice run here as
they do on a GPU (autocast on the CPU's bf16 kernels); fused AdamW and flash
attention need CUDA, so here they are checked to stay off and to fail with
the fix. Tokens/s and MFU are checked to reach MLflow beside the losses,
through the stage's tracking callback, against a real SQLite store.
"""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient
from test_checkpoint import PEAK, TCFG, toy_epochs, toy_model
from transformers import LlamaConfig, LlamaForCausalLM

from pit.config_sources import load_config
from pit.device import accelerator, prepare
from pit.errors import ConfigError
from pit.modeling import use_attention
from pit.tracking import Tracker
from pit.train.callbacks import EpochEvaluation, EpochTracking
from pit.train.loop import Callback, autocast_dtype, train_stage
from pit.train.throughput import ModelFlops, Throughput, matmul_params, peak_flops, peak_for_name

CPU = torch.device("cpu")


def test_precision_auto_is_fp32_on_a_cpu_and_bf16_when_asked():
    assert autocast_dtype(TCFG, CPU) is None
    assert autocast_dtype(TCFG.model_copy(update={"precision": "fp32"}), CPU) is None
    assert autocast_dtype(TCFG.model_copy(update={"precision": "bf16"}), CPU) is torch.bfloat16


class Losses(Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_step_end(self, state, loss, kind, lr) -> None:
        self.values.append(loss)


def _train(**switches) -> tuple[list[float], torch.nn.Module, torch.optim.Optimizer]:
    tcfg = TCFG.model_copy(update=switches)
    acc = accelerator(tcfg)
    model, optimizer = prepare(acc, toy_model(0), tcfg)
    losses = Losses()
    train_stage(model, toy_epochs(1, 4), tcfg, PEAK, 0, acc, optimizer, callbacks=[losses])
    return losses.values, acc.unwrap_model(model), optimizer


def test_bf16_trains_float32_weights_near_the_fp32_losses():
    fp32, _, optimizer = _train()
    bf16, model, _ = _train(precision="bf16")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert bf16 == pytest.approx(fp32, rel=2e-2)
    assert bf16 != fp32  # the products did run in bf16
    assert all(g.get("fused") is None for g in optimizer.param_groups)  # fused AdamW: CUDA only


def test_activation_checkpointing_recomputes_to_the_same_losses_and_weights():
    plain, plain_model, _ = _train()
    recomputed, model, _ = _train(gradient_checkpointing=True)
    assert model.model.gradient_checkpointing
    assert recomputed == pytest.approx(plain, rel=1e-5)
    for a, b in zip(model.parameters(), plain_model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_attention_can_be_switched_and_flash_attention_off_cuda_names_the_fix():
    model = toy_model(0)
    assert use_attention(model, "eager").config._attn_implementation == "eager"
    assert use_attention(model, "sdpa").config._attn_implementation == "sdpa"
    with pytest.raises(ConfigError, match=r"train.attention=flash_attention_2 needs a CUDA GPU"
                                          r".*set train.attention=sdpa"):
        use_attention(model, "flash_attention_2")


def test_fsdp_asks_for_checkpoints_off():
    with pytest.raises(ConfigError, match=r"fsdp cannot write checkpoints.*checkpoint.enabled"):
        load_config("smoke", None, ["train.distributed=fsdp"])
    cfg = load_config("smoke", None, ["train.distributed=fsdp", "checkpoint.enabled=false"])
    assert cfg.train.distributed == "fsdp"


# -- speed -----------------------------------------------------------------------------------


def _llama(tied: bool) -> LlamaForCausalLM:
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied))


def test_model_flops_are_six_per_multiplying_parameter_and_token_plus_attention():
    tied, untied = _llama(True), _llama(False)
    everything = sum(p.numel() for p in untied.parameters())
    assert matmul_params(untied) == everything - 100 * 32  # the input lookup multiplies nothing
    assert matmul_params(tied) == everything - 100 * 32  # the shared matrix counted once
    flops = ModelFlops(untied)
    lengths = [10, 3]
    expected = 6 * matmul_params(untied) * 13 + 12 * 3 * 32 * (10 ** 2 + 3 ** 2)
    assert flops(lengths) == expected


def test_peak_flops_come_from_the_gpu_name_or_the_setting_never_a_cpu_guess():
    assert peak_for_name("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_for_name("NVIDIA H100 PCIe") == 756e12
    assert peak_for_name("NVIDIA H200") == 989e12
    assert peak_for_name("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_for_name("Tesla T4") is None
    assert peak_flops(CPU) is None
    assert peak_flops(CPU, 2e12) == 2e12


def test_the_meter_reports_tokens_per_second_and_mfu_only_with_a_peak():
    flops = ModelFlops(_llama(True))
    meter = Throughput(flops, None)
    meter.start()
    meter.stop([30, 20])
    meter.seconds = 0.5  # the step's time, fixed so the figures can be checked
    assert meter.figures() == {"tokens_per_s": 100.0}
    meter.peak = flops([30, 20]) * 4
    assert meter.figures()["mfu"] == pytest.approx(50.0)
    meter.reset()
    assert meter.figures() == {}


def test_each_epoch_logs_tokens_per_second_and_mfu_beside_its_losses(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "speed")
    run_id = tracker.start_run("speed")
    tcfg = TCFG.model_copy(update={"peak_flops": 1e12})
    acc = accelerator(tcfg)
    model, optimizer = prepare(acc, toy_model(0), tcfg)
    evaluation, tracking = EpochEvaluation(None), EpochTracking(tracker, run_id, offset=4)
    epochs = toy_epochs(2, 4)
    state = train_stage(model, epochs, tcfg, PEAK, 0, acc, optimizer,
                        callbacks=[evaluation, tracking])

    client = MlflowClient(uri)
    for name in ("loss_doc", "loss_qa", "tokens_per_s", "mfu"):
        assert sorted(m.step for m in client.get_metric_history(run_id, name)) == [5, 6], name
    rates = [m.value for m in client.get_metric_history(run_id, "tokens_per_s")]
    mfus = [m.value for m in client.get_metric_history(run_id, "mfu")]
    assert all(r > 0 for r in rates) and all(0 < m < 100 for m in mfus)
    assert set(state.throughput) == {"tokens_per_s", "mfu"}
    # Speed is this attempt's, not the model's: kept out of what a resume restores.
    assert all("tokens_per_s" not in m for m in evaluation.history.values())
    assert all("tokens_per_s" not in m for m in tracking.state_dict()["logged"].values())



@pytest.mark.slow
def test_a_compiled_model_trains_to_the_same_losses_and_saves_under_the_same_names():
    plain, plain_model, _ = _train()
    compiled, model, _ = _train(compile=True)
    assert compiled == pytest.approx(plain, rel=1e-4)
    assert model._compiled_call_impl is not None
    assert model.state_dict().keys() == plain_model.state_dict().keys()
