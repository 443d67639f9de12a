"""Small readers of run state shared by the operator and trigger tests (through the hook, over HTTP)."""

from __future__ import annotations

import time

from airflow_provider_dune.api.states import RunState
from airflow_provider_dune.hooks.dune import DuneHook


def execution_state(execution_id: str) -> RunState:
    with DuneHook() as hook:
        return hook.get_execution_status(execution_id).state


def wait_running(pipeline_execution_id: str, timeout: float = 5) -> list[str]:
    """Execution ids of the pipeline's running nodes, waiting up to ``timeout`` for one to start."""
    deadline = time.monotonic() + timeout
    with DuneHook() as hook:
        while True:
            status = hook.get_pipeline_status(pipeline_execution_id)
            running = [n.execution_id for n in status.running_nodes if n.execution_id]
            if running or time.monotonic() > deadline:
                return running
            time.sleep(0.02)


def wait_finished(run_id: str, *, pipeline: bool, timeout: float = 5) -> str:
    """Wait up to ``timeout`` for a pipeline (or a single execution) to reach a final state; return its id."""
    deadline = time.monotonic() + timeout
    with DuneHook() as hook:
        read = hook.get_pipeline_status if pipeline else hook.get_execution_status
        while not read(run_id).is_terminal and time.monotonic() < deadline:
            time.sleep(0.02)
    return run_id
