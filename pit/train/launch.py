"""Run one recipe stage in its own process(es) through `accelerate launch`.

Why a process of its own: a training process can die in ways no `try` sees:
the kernel's out-of-memory killer, a pre-empted node, a SIGKILL. Run in the
Prefect task's own process, such a death takes the task (and its retry
logic) with it; run in a child, it is an exit status, the task fails cleanly
and its retry starts a fresh child that resumes from the newest checkpoint.
Going through accelerate makes the same command serve one CPU, one GPU and
every GPU of a node (`train.num_processes`).

The parent writes a JSON spec (a `StageJob`: config, recipe, stage, inputs,
MLflow run id) and reads back a JSON result (the stage model's key and
metrics). Errors a user can fix (a missing model, a missing bucket) come back
as the same `PitError` with the same message, so the task does not retry
them; anything else is a :class:`TrainingProcessError` with the child's last lines of output.

Start cost: the child imports torch, transformers and mlflow again, which is
seconds on a laptop and nothing beside a GPU stage; `train.launcher=inline`
skips it where crash isolation does not matter.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from pit import errors
from pit.config import PitConfig
from pit.train.runner import StageJob, StageRunner
from pit.train.signals import forwarding, launcher_env

_TAIL_LINES = 30


class TrainingProcessError(RuntimeError):
    """The training process exited without a result: killed, out of memory, or crashed.

    Not a :class:`~pit.errors.PitError`: nothing in the input is wrong, and
    a retry resumes from the newest checkpoint.
    """


def process_count(cfg: PitConfig) -> tuple[int, bool]:
    """How many processes to start, and whether they train on the CPU."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    n = cfg.train.num_processes or max(gpus, 1)
    return n, gpus == 0


def launch_command(spec: Path, num_processes: int, cpu: bool) -> list[str]:
    """The `accelerate launch` command line that runs :func:`main` on `spec`.

    Every launch setting is given explicitly, so a user's accelerate config
    file cannot turn on mixed precision or dynamo behind pit's back (pit's
    own settings, `train.precision` and `train.compile`, act in the code). On
    a CPU the threads of this process are split among the children, so one
    child computes the same numbers as inline. Several processes, CPU ones
    included, start through torchrun (`--multi_gpu`; accelerate's `--cpu`
    would start only one) on a free port, and the code's
    `Accelerator(cpu=True)` makes them a gloo group.
    """
    import torch

    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--num_processes", str(num_processes), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no"]
    if cpu:
        threads = max(1, torch.get_num_threads() // num_processes)
        cmd += ["--num_cpu_threads_per_process", str(threads)]
    if num_processes > 1:
        cmd += ["--multi_gpu", "--main_process_port", "0"]
    elif cpu:
        cmd.append("--cpu")
    return [*cmd, "-m", "pit.train.launch", str(spec)]


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def launch_stage(job: StageJob) -> tuple[str, dict[str, float]]:
    """Train `job` in child processes; return the stage model's key and metrics."""
    cfg = job.config
    n, cpu = process_count(cfg)
    root = Path(cfg.workdir) / "launch"
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{job.recipe.slug}-stage{job.index}-",
                                     dir=root) as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(job.model_dump_json())
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **launcher_env()}
        tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        proc = subprocess.Popen(launch_command(spec, n, cpu), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=env,
                                start_new_session=True)
        assert proc.stdout is not None
        with forwarding(proc):
            for line in proc.stdout:
                sys.stderr.write(line)
                tail.append(line)
            rc = proc.wait()
        result_path = spec.with_name("result.json")
        result = json.loads(result_path.read_text()) if result_path.is_file() else None
    if result and "error" in result:
        kind = getattr(errors, result["error"], None)
        if isinstance(kind, type) and issubclass(kind, errors.PitError):
            raise _rebuild(kind, result["message"])
        raise TrainingProcessError(result["message"])
    if rc != 0 or not result:
        raise TrainingProcessError(
            f"the training process of {job.where} {_describe(rc)} before publishing its model; "
            f"a retry resumes from its newest checkpoint. Last output:\n" + "".join(tail)
        )
    return result["key"], result["metrics"]


def _rebuild(kind: type[errors.PitError], message: str) -> errors.PitError:
    """The child's error again, with its message as it was (ConfigError lists its problems)."""
    exc = kind.__new__(kind)
    Exception.__init__(exc, message)
    return exc


def main(argv: list[str] | None = None) -> int:
    """Entry point of each launched process: train the stage of the spec, write the result."""
    args = sys.argv[1:] if argv is None else argv
    spec = Path(args[0])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "botocore", "s3fs", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    job = StageJob.model_validate_json(spec.read_text())
    result_path = spec.with_name("result.json")
    is_main = int(os.environ.get("RANK", "0")) == 0

    def write(result: dict) -> None:
        tmp = result_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(result_path)

    try:
        key, metrics = StageRunner(job).run()
    except errors.PitError as e:
        if is_main:
            write({"error": type(e).__name__, "message": str(e)})
        print(f"error: {e}", file=sys.stderr)
        return 2
    if is_main:
        write({"key": key, "metrics": metrics})
    return 0


if __name__ == "__main__":
    sys.exit(main())
