"""Stopping a training stage when asked to: SIGTERM, Ctrl-C, or its launcher's death.

A pre-empted node gets SIGTERM some seconds before SIGKILL, and so does a
cancelled flow run: the steps trained since the last checkpoint should not be
lost, and no training process should outlive the flow that started it.

- The process that launches a stage (`pit compare`, a flow-run pod) starts it
  in a process group of its own and, while it waits, forwards SIGTERM and
  SIGINT to that group (:func:`forwarding`). Once the group has stopped, the
  signal takes its usual effect in the launcher (Prefect's SIGTERM handler
  cancels the flow run; Ctrl-C raises KeyboardInterrupt), and no member of
  the group is left behind.
- A training process turns SIGTERM and SIGINT into a :class:`StopRequest`;
  the stage's `GracefulStop` callback saves a checkpoint at the next step
  boundary and raises :class:`~pit.errors.TrainingStopped`, so the process
  exits non-zero saying where it stopped and how to resume.
- A group of its own is not killed with its launcher's group (a SIGKILL of
  `pit compare`, the out-of-memory killer). So the launcher names itself in
  `PIT_LAUNCHER` (pid and start time), each training process watches it, and
  one whose launcher is gone stops the same way instead of training for no one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

from pit.processes import alive, identity

log = logging.getLogger(__name__)

LAUNCHER_ENV = "PIT_LAUNCHER"
SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How long a stopping group may take to checkpoint and exit before it is killed.
STOP_GRACE_SECONDS = 120.0
# How long a training process whose launcher died may take to reach a step boundary.
ORPHAN_GRACE_SECONDS = 900.0
_WATCH_SECONDS = 0.5


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def launcher_env() -> dict[str, str]:
    """The environment entry through which a training process watches this launcher."""
    return {LAUNCHER_ENV: identity()}


class StopRequest:
    """Whether this training process was asked to stop, and why.

    Set by SIGTERM or SIGINT while :meth:`installed`, or by the death of the
    launcher named in `PIT_LAUNCHER`; read at each step boundary.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self.signal: int | None = None
        self._event = threading.Event()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def set(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()
            log.warning("stop requested: %s; stopping at the next step boundary "
                        "with a checkpoint", reason)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.requested:
            # A second signal: the caller will not wait for a checkpoint.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signal = signum
        self.set(signal.Signals(signum).name)

    def _watch(self, launcher: str, done: threading.Event) -> None:
        while not done.wait(_WATCH_SECONDS):
            if not alive(launcher):
                _silence()
                self.set(f"the death of its launcher (process {launcher.split(':')[0]})")
                break
        if done.wait(ORPHAN_GRACE_SECONDS):
            return
        log.error("no step boundary in %.0f s after the launcher died; exiting",
                  ORPHAN_GRACE_SECONDS)
        os._exit(3)

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Signal handlers (main thread only) and the launcher watch, for the time of training.

        A launched training process reports a stop by its exit status and
        message. Training inline, in the launcher's own process, the signal
        then takes its usual effect there too (Prefect cancels the flow run).
        """
        previous = {}
        if _in_main_thread():
            previous = {s: signal.signal(s, self._on_signal) for s in SIGNALS}
        launcher = os.environ.get(LAUNCHER_ENV)
        done = threading.Event()
        if launcher and launcher.split(":")[0] != str(os.getpid()):
            threading.Thread(target=self._watch, args=(launcher, done), daemon=True,
                             name="pit-launcher-watch").start()
        try:
            yield self
        finally:
            done.set()
            for s, handler in previous.items():
                signal.signal(s, handler)
            if self.signal is not None and not launcher:
                _redeliver(self.signal, previous[self.signal])


def _silence() -> None:
    """Send this process's output to /dev/null: its reader (the launcher) is gone.

    A write to the dead launcher's pipe would raise BrokenPipeError in
    whatever prints next, before the checkpoint is saved.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def stop_group(proc: subprocess.Popen, grace: float | None = None) -> None:
    """Leave nothing of `proc`'s process group running: SIGTERM, `grace` seconds, SIGKILL.

    A group whose leader has exited may still hold members (a training process
    whose `accelerate launch` died): they are waited for too. `grace` defaults
    to `STOP_GRACE_SECONDS`.
    """
    grace = STOP_GRACE_SECONDS if grace is None else grace
    pgid = proc.pid
    if not _group_alive(pgid):
        proc.poll()
        return
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()
        if not _group_alive(pgid):
            return
        time.sleep(0.1)
    log.warning("process group %d did not stop within %.0f s of SIGTERM; killing it", pgid,
                grace)
    _signal_group(pgid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


@contextlib.contextmanager
def forwarding(proc: subprocess.Popen) -> Iterator[None]:
    """While the body waits for `proc`, forward SIGTERM and SIGINT to its process group.

    `proc` must lead a group of its own (`start_new_session=True`). When the
    body is done, no member of the group is left (:func:`stop_group`), and a
    signal received meanwhile takes its usual effect here: the handler that
    was installed before (Prefect's, Python's KeyboardInterrupt) runs, or the
    default action. Off the main thread no handler can be installed; the
    launcher watch of each training process then covers this process's death.
    """
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        log.warning("%s received: forwarded to the training processes (group %d), which "
                    "save a checkpoint and stop", signal.Signals(signum).name, proc.pid)
        _signal_group(proc.pid, signum)

    previous = {}
    if _in_main_thread():
        previous = {s: signal.signal(s, forward) for s in SIGNALS}
    try:
        yield
    finally:
        try:
            stop_group(proc)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    if received:
        _redeliver(received[0], previous[received[0]])


def _redeliver(signum: int, handler: object) -> None:
    """Give a signal that waited for the training processes its usual effect here."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit(143) in this (main) process, so cleanup still runs.

    Prefect turns SIGTERM into a crash of the flow run, then hands the signal
    to the handler found before it; with the default one the process dies on
    the spot, and atexit never stops Prefect's own local API server, which is
    left running. With this one `finally` blocks and atexit run.
    """
    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    if _in_main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, leave)
