"""Shared behaviour of the operators that start a Dune run and wait for it.

Subclasses say how to start a run, read its status, build its trigger and find what to cancel; this base class
owns the rest: retry re-attach, XCom, deferral, worker-side polling, the timeout, failure messages and
cancellation. Deferrable and worker-side waiting both go through :func:`~airflow_provider_dune.utils.polling.decide`.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf
from airflow.exceptions import AirflowException

from airflow_provider_dune.api.errors import DuneConfigurationError, DuneError
from airflow_provider_dune.api.validation import validate_performance, validate_query_id, validate_query_parameters
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.triggers.pipeline import DunePollingTrigger
from airflow_provider_dune.utils import run_registry
from airflow_provider_dune.utils.polling import SUCCESS, TIMEOUT, PollTarget, Snapshot, decide, validate_event
from airflow_provider_dune.version_compat import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

DEFAULT_TIMEOUT = timedelta(hours=24)


def is_template(value: Any) -> bool:
    """Whether ``value`` is a still-unrendered Jinja string (skipped by parse-time validation)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def validated(value: Any, validator: Callable[[Any], Any], *, allow_templates: bool) -> Any:
    """``validator(value)``, except for an unrendered template at parse time (checked again at execute)."""
    return value if allow_templates and is_template(value) else validator(value)


def query_run_request(
    query_id: Any, performance: Any, query_parameters: Any, *, allow_templates: bool
) -> dict[str, Any]:
    """The validated arguments of a run of one saved query (a query execution or a query's pipeline)."""
    return {
        "query_id": validated(query_id, validate_query_id, allow_templates=allow_templates),
        "performance": validated(performance, validate_performance, allow_templates=allow_templates),
        "query_parameters": validated(query_parameters, validate_query_parameters, allow_templates=allow_templates),
    }


def positive_seconds(value: timedelta | float | int | None, name: str) -> float | None:
    """Seconds from a number or timedelta; ``None`` stays ``None``; zero/negative is a configuration error."""
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
        raise DuneConfigurationError(f"{name} must be a positive number of seconds or a timedelta, got {value!r}")
    return float(seconds)


class DuneRunOperator(BaseOperator):
    """Start a Dune run and (by default) wait for it, in the triggerer when deferrable.

    :param dune_conn_id: Airflow connection of type ``dune`` (templated).
    :param wait_for_completion: wait for the run to finish; with ``False`` the task ends once Dune accepted it.
    :param deferrable: wait in the triggerer; defaults to Airflow's ``[operators] default_deferrable``.
    :param poll_interval: seconds between status calls. Each waiting run reads ``60 / poll_interval`` times a
        minute, and all runs with one API key share its budget (Dune's Free plan: 40 reads a minute, so about
        6 runs at once at 10 s). Beyond it, requests with that key back off together: slower, but no failures.
    :param timeout: longest wait (seconds or timedelta, ``None`` for no limit); then a final status check, the
        still-running executions are cancelled and the task fails.
    :param reuse_existing_execution: a retry of this task instance re-attaches to the run a previous try
        started if it is still running (same request) instead of starting a second billed run.
    :param cancel_on_kill: cancel running executions when the task is killed, or marked failed while deferred
        (Airflow 3.3+).
    """

    #: XCom key (and trigger-event field) holding the id of the run.
    id_field: str = "execution_id"
    #: Trigger that waits for the run; takes ``id_field`` plus the polling settings as keyword arguments.
    trigger_class: type[DunePollingTrigger]
    #: What the cancelled things are called in failure messages.
    cancelled_noun: str = "execution(s)"

    def __init__(
        self,
        *,
        dune_conn_id: str = DuneHook.default_conn_name,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: timedelta | float = 30.0,
        timeout: timedelta | float | None = DEFAULT_TIMEOUT,
        reuse_existing_execution: bool = True,
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dune_conn_id = dune_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = positive_seconds(poll_interval, "poll_interval") or 30.0
        self.timeout = positive_seconds(timeout, "timeout")
        self.reuse_existing_execution = reuse_existing_execution
        self.cancel_on_kill = cancel_on_kill
        self.run_id: str | None = None

    # -- what subclasses provide --------------------------------------------------------------------------

    @abstractmethod
    def build_request(self, *, allow_templates: bool) -> dict[str, Any]:
        """Validated request; at parse time (``allow_templates=True``) unrendered templates are skipped."""

    @abstractmethod
    def start_run(self, hook: DuneHook, request: Mapping[str, Any]) -> str:
        """Start the run on Dune and return its id."""

    @abstractmethod
    def get_status(self, hook: DuneHook, run_id: str) -> Snapshot:
        """Read the run's current status."""

    def build_trigger(self, run_id: str, end_time: float | None) -> DunePollingTrigger:
        """The trigger that waits for the run in the triggerer (:attr:`trigger_class`, keyed by :attr:`id_field`).

        Called right after a status read, so the trigger's first read waits one poll interval.
        """
        return self.trigger_class(
            **{self.id_field: run_id},
            dune_conn_id=self.dune_conn_id,
            poll_interval=self.poll_interval,
            end_time=end_time,
            cancel_on_kill=self.cancel_on_kill,
            first_poll_at=time.time() + self.poll_interval,
        )

    @abstractmethod
    def running_executions(
        self, hook: DuneHook, run_id: str, details: Mapping[str, Any] | None
    ) -> list[tuple[str, str]]:
        """``(label, execution_id)`` of every execution of the run that started and has not finished."""

    def run_label(self, run_id: str) -> str:
        return f"Dune execution {run_id}"

    def accept_failure(self, details: Mapping[str, Any] | None) -> bool:
        """Whether a ``failed`` event is acceptable after all (e.g. a partial result the user allowed)."""
        return False

    def on_success(self, context: Context, hook: DuneHook, run_id: str, details: Mapping[str, Any] | None) -> Any:
        """Return value of the task once the run succeeded."""
        return dict(details or {self.id_field: run_id, "outcome": SUCCESS})

    # -- the shared flow ----------------------------------------------------------------------------------

    @property
    def hook(self) -> DuneHook:
        return DuneHook(self.dune_conn_id)

    def target(self, run_id: str) -> PollTarget:
        return PollTarget(self.id_field, run_id, self.run_label(run_id))

    def execute(self, context: Context) -> Any:
        request = self.build_request(allow_templates=False)
        fingerprint = run_registry.request_fingerprint({"operator": type(self).__name__, **request})
        hook = self.hook
        current = self._reattach(context, hook, fingerprint)
        if current is None:
            run_id = self.start_run(hook, request)
            run_registry.remember(context, run_id, fingerprint)
        else:
            run_id, _ = current
        self.run_id = run_id
        context["ti"].xcom_push(key=self.id_field, value=run_id)

        if not self.wait_for_completion:
            status = current[1] if current else self.get_status(hook, run_id)
            self.log.info("Not waiting for %s: %s", self.run_label(run_id), status.progress_summary())
            run_registry.forget(context)
            return status.to_dict()

        end_time = time.time() + self.timeout if self.timeout is not None else None
        if not self.deferrable:
            return self.execute_complete(context, self._wait_in_worker(hook, run_id, end_time))
        first: Snapshot | BaseException
        try:
            first = current[1] if current else self.get_status(hook, run_id)
        except DuneError as err:
            first = err
        step = decide(self.target(run_id), first, now=time.time(), end_time=end_time, poll_interval=self.poll_interval)
        if step.event is not None:
            return self.execute_complete(context, step.event)
        self.defer(trigger=self.build_trigger(run_id, end_time), method_name="execute_complete", timeout=None)

    def _reattach(self, context: Context, hook: DuneHook, fingerprint: str) -> tuple[str, Snapshot] | None:
        """The still-running run a previous try of this task instance started, if any."""
        if not self.reuse_existing_execution:
            return None
        previous = run_registry.recall(context, fingerprint)
        if not previous:
            return None
        try:
            status = self.get_status(hook, previous)
        except DuneError as err:
            self.log.warning(
                "Could not check %s of a previous try (%s); starting a new run", self.run_label(previous), err
            )
            return None
        if status.outcome.is_final:
            self.log.info(
                "%s of a previous try already ended (%s); starting a new run",
                self.run_label(previous),
                status.outcome.value,
            )
            return None
        self.log.info(
            "Re-attaching to %s started by a previous try: %s", self.run_label(previous), status.progress_summary()
        )
        return previous, status

    def _wait_in_worker(self, hook: DuneHook, run_id: str, end_time: float | None) -> dict[str, Any]:
        target = self.target(run_id)
        errors = 0
        last: Snapshot | None = None
        last_summary = None
        while True:
            result: Snapshot | BaseException
            try:
                result = self.get_status(hook, run_id)
                errors, last = 0, result
                if result.progress_summary() != last_summary:
                    last_summary = result.progress_summary()
                    self.log.info("%s: %s", target.label, last_summary)
            except DuneError as err:
                errors += 1
                result = err
                self.log.warning("Status call for %s failed (%d in a row): %s", target.label, errors, err)
            step = decide(
                target,
                result,
                now=time.time(),
                end_time=end_time,
                poll_interval=self.poll_interval,
                consecutive_errors=errors,
                last_snapshot=last,
            )
            if step.event is not None:
                return step.event
            time.sleep(step.wait)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Act on the final event: success returns the summary; anything else cancels what still runs and fails."""
        run_id = self.run_id or (event or {}).get(self.id_field)
        if not isinstance(run_id, str) or not run_id:
            raise AirflowException(f"received a trigger event without a {self.id_field.replace('_', ' ')}: {event!r}")
        self.run_id = run_id
        status, message, details = validate_event(event, self.target(run_id))
        if status == SUCCESS or (status == "failed" and self.accept_failure(details)):
            self.log.info(message)
            run_registry.forget(context)
            return self.on_success(context, self.hook, run_id, details)
        cancelled = self.cancel_running(run_id, details)
        run_registry.forget(context)
        if cancelled:
            message += f"\nCancelled {cancelled} still-running {self.cancelled_noun} so they use no more credits."
        if status == TIMEOUT and self.timeout is not None:
            message += f"\nTimeout was {self.timeout:g} s; raise `timeout` if the run legitimately needs longer."
        raise AirflowException(message)

    def cancel_running(self, run_id: str, details: Mapping[str, Any] | None) -> int:
        """Best effort: cancel every execution of the run that has started and not finished; return how many."""
        hook = self.hook
        try:
            running = self.running_executions(hook, run_id, details)
        except DuneError as err:
            self.log.warning("Could not read %s to cancel what still runs: %s", self.run_label(run_id), err)
            return 0
        cancelled = 0
        for label, execution_id in running:
            try:
                if hook.cancel_execution(execution_id):
                    cancelled += 1
                self.log.info("Cancelled %s (execution %s)", label, execution_id)
            except DuneError as err:
                self.log.warning("Could not cancel %s (execution %s): %s", label, execution_id, err)
        return cancelled

    def on_kill(self) -> None:
        """Cancel running executions when the task is killed while waiting in the worker."""
        if self.cancel_on_kill and self.run_id:
            self.cancel_running(self.run_id, None)
