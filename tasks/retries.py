"""When Prefect tries a failed task again: pit's one retry rule, after pit's own retries.

pit waits out transient faults where they happen (the store, the LLM client,
dump downloads) within a small budget; a fault that outlasts it arrives here
as a :class:`~pit.errors.TransientError` (or a network error nothing
wrapped), and Prefect runs the task again after a longer wait, resuming from
what the first try published. Bad input (`DataError`, `ConfigError`,
`UnsafeOutputError`, a missing bucket, a corrupt output) and bugs
(`TypeError`, a shape mismatch) fail the same way every time, so they fail
at once (`pit.retry.is_transient` is the rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pit.retry import is_transient

if TYPE_CHECKING:
    from prefect import Task
    from prefect.client.schemas.objects import TaskRun
    from prefect.states import State


def failure(state: State) -> BaseException | None:
    """The exception a failed task run raised (None if it did not fail)."""
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the caller judges it
        return exc
    return None


def retry_if_transient(task: Task, task_run: TaskRun, state: State) -> bool:
    """Prefect `retry_condition_fn`: retry a transient fault, never bad input or a bug."""
    exc = failure(state)
    return exc is not None and is_transient(exc)
