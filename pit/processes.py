"""Naming a process so that another one, later, can tell whether it still runs.

A pid alone is not a name: the kernel hands it out again. With the process's
start time it is one, and a name that also carries the host tells a process
on another machine (whose liveness cannot be checked from here) apart.
"""

from __future__ import annotations

import os
import socket

import psutil


def identity(pid: int | None = None) -> str:
    """`pid:start_time` of a process of this host (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{psutil.Process(pid).create_time():.3f}"


def alive(name: str) -> bool:
    """Whether the process named by :func:`identity` still runs (a reused pid does not count)."""
    pid, _, _ = name.partition(":")
    try:
        return identity(int(pid)) == name
    except (psutil.Error, ValueError):
        return False


def holder() -> str:
    """This process as `host/pid:start_time`."""
    return f"{socket.gethostname()}/{identity()}"


def holder_alive(name: str) -> bool | None:
    """Whether a :func:`holder` still runs; None when it is on another host and cannot be told."""
    host, _, ident = name.rpartition("/")
    if host != socket.gethostname():
        return None
    return alive(ident)
