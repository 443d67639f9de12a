"""Shared behaviour of the operators that start a Dune run and wait for it.

Subclasses say how to start a run, read its status, build its trigger and find what to cancel; this base class
owns the rest: retry re-attach, XCom, deferral, worker-side polling, the timeout, failure messages and
cancellation. Deferrable and worker-side waiting both go through one
:class:`~airflow_provider_dune.polling.PollingSession`.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow.configuration import conf
from airflow.exceptions import AirflowException

from airflow_provider_dune.api.credits import run_cost_warning
from airflow_provider_dune.api.errors import (
    DuneAPIError,
    DuneConfigurationError,
    DuneDatapointLimitError,
    DuneError,
    DuneNotFoundError,
    DunePartialResultError,
)
from airflow_provider_dune.api.failures import not_retried, permanent_request_failure, permanent_run_failure
from airflow_provider_dune.api.forecast import observed_duration
from airflow_provider_dune.api.models import PipelineOutcome
from airflow_provider_dune.api.run_report import ReportRow, detection_delay, format_report, total_credits
from airflow_provider_dune.api.validation import (
    validate_optional_seconds,
    validate_performance,
    validate_query_id,
    validate_query_parameters,
    validate_seconds,
)
from airflow_provider_dune.assets import RefreshedObject, emit_asset_events
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.polling import (
    CANCELLED,
    ERROR,
    FAILED,
    SUCCESS,
    TIMEOUT,
    PollingSession,
    PollTarget,
    ReadSchedule,
    Snapshot,
    validate_event,
)
from airflow_provider_dune.triggers.base import DunePollingTrigger
from airflow_provider_dune.utils import metrics, run_durations, run_registry
from airflow_provider_dune.utils.config import min_poll_interval
from airflow_provider_dune.utils.unconfirmed import fail_when_unconfirmed
from airflow_provider_dune.version_compat import AirflowFailException, BaseOperator

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


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class RunToWaitFor(NamedTuple):
    """The run a task waits for: its id, its status when already read, and when this task started it (``None``
    for a run started earlier: a previous try's, or a finished run that is reused)."""

    run_id: str
    status: Snapshot | None = None
    started_at: float | None = None


class RunReport(NamedTuple):
    """A finished run as the task reports it: the return value, the rows of the log's table, and why it did not
    succeed (when it did not)."""

    summary: dict[str, Any]
    rows: list[ReportRow]
    failure: str


class DuneRunOperator(BaseOperator):
    """Start a Dune run and (by default) wait for it, in the triggerer when deferrable.

    :param dune_conn_id: Airflow connection of type ``dune`` (templated).
    :param wait_for_completion: wait for the run to finish; with ``False`` the task ends once Dune accepted it.
    :param deferrable: wait in the triggerer; defaults to Airflow's ``[operators] default_deferrable``.
    :param poll_interval: the longest wait between two status calls, so the longest delay before the end of
        the run is noticed. All runs with one API key share its read budget (connection extra
        ``reads_per_minute``, Dune's Free plan: 40 a minute); when they ask for more, reads wait their turn,
        the runs nearest their expected end first, and the wait is logged.
    :param adaptive_polling: read more often near the run's expected end, forecast from the durations of
        previous runs of the same request in this deployment (and a pipeline's nodes done so far), so the end
        is noticed within seconds while the reads in between stay ``poll_interval`` apart. ``False`` reads
        exactly every ``poll_interval``.
    :param timeout: longest wait (seconds or timedelta, ``None`` for no limit); then a final status check, the
        still-running executions are cancelled and the task fails.
    :param reuse_existing_execution: a retry of this task instance re-attaches to the run a previous try
        started (same request) instead of starting a second billed run: it waits for it if it still runs, and
        uses its result if it succeeded. Only a run that failed, was cancelled or is unknown to Dune is started
        again.
    :param retry_unconfirmed_start: when starting the run failed in a way that may have started it anyway (no
        answer, a dropped connection, a 5xx, an unreadable answer), let Airflow retry the task, which may pay
        for a second run. By default such a task fails without retries and says what to check on dune.com.
    :param cancel_on_kill: cancel running executions when the task is killed, or marked failed while deferred
        (Airflow 3.3+).
    """

    #: XCom key (and trigger-event field) holding the id of the run.
    id_field: str = "execution_id"
    #: Trigger that waits for the run; takes ``id_field`` plus the polling settings as keyword arguments.
    trigger_class: type[DunePollingTrigger]
    #: What the run is called in metrics (``dune.runs.started.<kind>``).
    run_kind: str = "query"
    #: What the cancelled things are called in failure messages.
    cancelled_noun: str = "execution(s)"

    def __init__(
        self,
        *,
        dune_conn_id: str = DuneHook.default_conn_name,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: timedelta | float = 30.0,
        adaptive_polling: bool = True,
        timeout: timedelta | float | None = DEFAULT_TIMEOUT,
        reuse_existing_execution: bool = True,
        retry_unconfirmed_start: bool = False,
        cancel_on_kill: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dune_conn_id = dune_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = validate_seconds(poll_interval, "poll_interval", minimum=min_poll_interval())
        self.adaptive_polling = adaptive_polling
        self.timeout = validate_optional_seconds(timeout, "timeout")
        self.reuse_existing_execution = reuse_existing_execution
        self.retry_unconfirmed_start = retry_unconfirmed_start
        self.cancel_on_kill = cancel_on_kill
        self.run_id: str | None = None
        self._context: Context | None = None
        #: A final status the worker already holds, so that :meth:`execute_complete` does not read it again.
        self._final_status: Snapshot | None = None

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

    def build_trigger(
        self, run_id: str, end_time: float | None, schedule: ReadSchedule, first_wait: float
    ) -> DunePollingTrigger:
        """The trigger that waits for the run in the triggerer (:attr:`trigger_class`, keyed by :attr:`id_field`).

        Called right after a status read, so the trigger's first read waits ``first_wait`` seconds.
        """
        return self.trigger_class(
            **{self.id_field: run_id},
            dune_conn_id=self.dune_conn_id,
            poll_interval=self.poll_interval,
            end_time=end_time,
            cancel_on_kill=self.cancel_on_kill,
            first_poll_at=time.time() + first_wait,
            started_at=schedule.started_at,
            expected_durations=list(schedule.durations),
            adaptive=schedule.adaptive,
        )

    def read_schedule(self, started_at: float | None, durations: list[float]) -> ReadSchedule:
        return ReadSchedule.for_run(
            self.poll_interval, started_at=started_at, durations=durations, adaptive=self.adaptive_polling
        )

    def request_fingerprint(self, request: Mapping[str, Any]) -> str:
        """Identifies the request: a retry re-attaches to a run of the same one, and its durations are shared."""
        return run_registry.request_fingerprint({"operator": type(self).__name__, **request})

    @abstractmethod
    def running_executions(
        self, hook: DuneHook, run_id: str, details: Mapping[str, Any] | None, status: Snapshot | None = None
    ) -> list[tuple[str, str]]:
        """``(label, execution_id)`` of every execution of the run that started and has not finished.

        :param details: the run's last known summary, used when its status cannot be read.
        :param status: a status just read (else the status is read).
        """

    def run_label(self, run_id: str) -> str:
        return f"Dune execution {run_id}"

    @abstractmethod
    def report(self, hook: DuneHook, status: Snapshot) -> RunReport:
        """The finished run's summary (return value), report rows and failure text, from its final status."""

    @abstractmethod
    def where_to_check(self, request: Mapping[str, Any]) -> str:
        """Where on dune.com a user sees whether a run of ``request`` started (for an unconfirmed start)."""

    def accept_failure(self, details: Mapping[str, Any] | None) -> bool:
        """Whether a ``failed`` event is acceptable after all (e.g. a partial result the user allowed)."""
        return False

    def refreshed_objects(self, details: Mapping[str, Any]) -> list[RefreshedObject]:
        """The Dune objects a successful run refreshed, for the task's ``dune://`` outlets and asset aliases."""
        return []

    def reusable_run(self, hook: DuneHook, request: Mapping[str, Any]) -> tuple[str, Snapshot] | None:
        """A finished run to use instead of starting one (e.g. a fresh enough latest result); none by default."""
        return None

    def lineage_subject(self) -> dict[str, Any]:
        """The ``dune`` OpenLineage job facet's fields: ``operation`` and the query id or view name."""
        return {"operation": type(self).__name__}

    # -- OpenLineage (read by apache-airflow-providers-openlineage when it is installed) ----------------------

    _lineage_details: dict[str, Any] | None = None
    _lineage_error: str | None = None

    def _lineage(self, *, failed: bool) -> Any:
        from airflow_provider_dune.utils.openlineage import operator_lineage

        details = self._lineage_details or {}
        return operator_lineage(
            refreshed=[] if failed else self.refreshed_objects(details),
            run_id_field=self.id_field,
            run_id=self.run_id,
            details=details,
            error=self._lineage_error if failed else None,
            **self.lineage_subject(),
        )

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Outputs: what the run refreshed; facets: the Dune run ids and the query or view."""
        return self._lineage(failed=False)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """No outputs; the run facets carry the Dune run ids and the error."""
        return self._lineage(failed=True)

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
        self._context = context
        request = self.build_request(allow_templates=False)
        fingerprint = self.request_fingerprint(request)
        hook = self.hook
        run = self._run_to_wait_for(context, hook, request, fingerprint)
        self.run_id = run.run_id
        context["ti"].xcom_push(key=self.id_field, value=run.run_id)

        if not self.wait_for_completion:
            status = run.status if run.status is not None else self.get_status(hook, run.run_id)
            self.log.info("Not waiting for %s: %s", self.run_label(run.run_id), status.progress_summary())
            run_registry.forget(context)
            return status.to_dict()

        end_time = time.time() + self.timeout if self.timeout is not None else None
        # Only a run this try started has a known start, from which its end can be forecast.
        durations = run_durations.recall(fingerprint) if self.adaptive_polling and run.started_at is not None else []
        schedule = self.read_schedule(run.started_at, durations)
        session = PollingSession(self.target(run.run_id), schedule, end_time, self.log)
        if not self.deferrable:
            return self.execute_complete(context, self._wait_in_worker(hook, session))
        first = run.status if run.status is not None else self._read_status(hook, run.run_id)
        step = session.after_read(first, time.time())
        if step.event is not None:
            self._final_status = None if isinstance(first, BaseException) else first
            return self.execute_complete(context, step.event)
        self.defer(
            trigger=self.build_trigger(run.run_id, end_time, schedule, step.wait),
            method_name="execute_complete",
            timeout=None,
        )

    def _run_to_wait_for(
        self, context: Context, hook: DuneHook, request: Mapping[str, Any], fingerprint: str
    ) -> RunToWaitFor:
        """The run this try waits for: a previous try's (see :meth:`_previous_run`), else a finished run to reuse
        (:meth:`reusable_run`), else a new one, started here and remembered for the next try."""
        previous = self._previous_run(context, hook, fingerprint)
        if previous is not None:
            return previous
        reused = self.reusable_run(hook, request)
        if reused is not None:
            return RunToWaitFor(*reused)
        run_id = self._start(hook, request)
        started_at = time.time()  # after the answer: the start request may have waited for the key's budget
        run_registry.remember(context, run_id, fingerprint)
        return RunToWaitFor(run_id, started_at=started_at)

    def _start(self, hook: DuneHook, request: Mapping[str, Any]) -> str:
        """Start the run; an answer that never came (the run may exist) fails the task without retries."""
        with fail_when_unconfirmed(
            effect="Dune may have started the run",
            risk="a second billed run",
            check=f"Check {self.where_to_check(request)}: if it did not run, clear this task to run it again.",
            retry_setting="retry_unconfirmed_start",
            allow_retry=self.retry_unconfirmed_start,
        ):
            try:
                run_id = self.start_run(hook, request)
            except DuneAPIError as err:
                reason = permanent_request_failure(err)
                if reason is None:
                    raise
                raise AirflowFailException(not_retried(str(err), reason, "be refused")) from None
        metrics.run_started(self.run_kind)
        return run_id

    def _previous_run(self, context: Context, hook: DuneHook, fingerprint: str) -> RunToWaitFor | None:
        """The run a previous try of this task instance started, when it is still running or it succeeded.

        ``None`` means a new run should start: there was none, it failed or was cancelled (what the retry is for),
        or Dune does not know it. When its status cannot be read, nothing is started: the task fails and its
        next try checks again.
        """
        if not self.reuse_existing_execution:
            return None
        try:
            record = run_registry.read(context)
        except run_registry.RunRecordUnavailable as err:
            if getattr(context["ti"], "try_number", 1) <= 1:  # no earlier try of this task instance to find
                self.log.warning("%s; this is the first try, so no earlier run can exist", err)
                return None
            raise AirflowException(
                f"{str(err)[:1].upper()}{str(err)[1:]}. Not starting another billed run while one a previous try "
                "started may still be running; the next try of this task checks again."
            ) from None
        if record and record.get("ended"):
            self.log.warning(
                "Try %s ran %s, which ended %s: %s. Starting a new run.",
                record.get("try", "?"),
                self.run_label(str(record.get("run_id"))),
                record["ended"],
                record.get("summary") or "no details",
            )
            return None
        previous = run_registry.recall(context, fingerprint) if record else None
        if not previous:
            return None
        try:
            status = self.get_status(hook, previous)
        except DuneNotFoundError as err:
            self.log.warning(
                "%s of a previous try is unknown to Dune (%s); starting a new run", self.run_label(previous), err
            )
            return None
        except DuneError as err:
            raise AirflowException(
                f"Could not read the status of {self.run_label(previous)}, started by a previous try of this task: "
                f"{err}\nNot starting another billed run while that one may still be running; the next try of "
                "this task checks again."
            ) from None
        outcome = status.outcome
        if outcome is PipelineOutcome.RUNNING:
            self.log.info(
                "Re-attaching to %s started by a previous try: %s",
                self.run_label(previous),
                status.progress_summary(),
            )
            return RunToWaitFor(previous, status)
        if outcome is PipelineOutcome.SUCCESS:
            self.log.info(
                "%s of a previous try of this task already succeeded; using it instead of starting another run",
                self.run_label(previous),
            )
            return RunToWaitFor(previous, status)
        details = status.to_dict()
        if outcome is PipelineOutcome.FAILED and self.accept_failure(details):
            return RunToWaitFor(previous, status)
        reason = permanent_run_failure(details) if outcome is PipelineOutcome.FAILED else None
        if reason is not None:
            # The previous try never acted on this failure (a try that did forgets its run), e.g. Airflow failed
            # it before it resumed (apache/airflow#67287). Another run would fail the same way: report this one.
            self.log.warning(
                "%s of a previous try failed (%s) and that try did not report it; reporting it instead of starting "
                "another billed run. Clear the task again once the cause is fixed to start a new run.",
                self.run_label(previous),
                reason,
            )
            return RunToWaitFor(previous, status)
        self.log.info("%s of a previous try ended %s; starting a new run", self.run_label(previous), outcome.value)
        return None

    def _read_status(self, hook: DuneHook, run_id: str) -> Snapshot | DuneError:
        """The run's status, or the error reading it raised (for the polling session to count and decide on)."""
        try:
            return self.get_status(hook, run_id)
        except DuneError as err:
            return err

    def _wait_in_worker(self, hook: DuneHook, session: PollingSession) -> dict[str, Any]:
        """Wait for the run in the worker, reading its status until ``session`` gives the final event."""
        hook.deadline = session.end_time
        while True:
            result = self._read_status(hook, session.target.run_id)
            step = session.after_read(result, time.time())
            if step.event is not None:
                self._final_status = None if isinstance(result, BaseException) else result
                return step.event
            time.sleep(step.wait)

    def _record_duration(self, event: Mapping[str, Any] | None) -> None:
        """Add the run's observed duration to its request's history (runs this task started, that succeeded)."""
        timing = (event or {}).get("timing")
        if not isinstance(timing, Mapping):
            return
        try:
            duration = observed_duration(
                _number(timing.get("started_at")),
                _number(timing.get("last_running_at")),
                _number(timing.get("finished_seen_at")) or 0.0,
            )
            if duration is not None:
                run_durations.record(self.request_fingerprint(self.build_request(allow_templates=False)), duration)
        except Exception as err:  # the history is an optimisation: never fail a finished run over it
            self.log.warning("Could not record the duration of %s: %s", self.run_label(self.run_id or ""), err)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Act on the final event: success returns the summary; anything else cancels what still runs and fails.

        The event only says how the wait ended; the final status is read once more (a pipeline's nodes too, see
        :meth:`report`) for the report in the log, the return value and the failure message. When that read
        fails after a success event, the task fails (retryable) rather than report a run it cannot describe: the
        next try re-attaches to the finished run and reports it, without starting another. After any other
        event the task fails anyway, with the event's message.

        The record of the run is kept until the result was handled, so a retry after a failure there (fetching
        or writing the rows) uses the finished run instead of starting another one.
        """
        self._context = context
        run_id = self.run_id or (event or {}).get(self.id_field)
        if not isinstance(run_id, str) or not run_id:
            raise AirflowException(f"received a trigger event without a {self.id_field.replace('_', ' ')}: {event!r}")
        self.run_id = run_id
        label = self.run_label(run_id)
        status, message, details = validate_event(event, self.target(run_id))
        hook = self.hook
        if status == TIMEOUT:
            hook.deadline = time.time()  # the timeout has passed: no wait for the key's budget before the last reads
        final, read_error = self._read_final_status(hook, run_id, status)
        if read_error is not None:
            if status == ERROR:  # the event's message is shortened: this one says all
                message = f"Could not get the status of {label}: {read_error}"
            else:
                self.log.warning("Could not read the final status of %s to report it: %s", label, read_error)
                if status in (FAILED, CANCELLED) and not details:
                    # The event names what failed; Dune's error text is in the status that could not be read.
                    message += f" (Dune's error text could not be read: {read_error})"
        report = None
        if final is not None:
            report = self.report(hook, final)
            details = report.summary
            title = f"{label}: {final.outcome.value}"
            progress = getattr(final, "progress", None)
            title += f", {progress[0]}/{progress[1]} nodes done" if progress else ""
            self.log.info("%s", format_report(title, report.rows))
            if status in (FAILED, CANCELLED) and final.outcome.is_final and final.outcome != SUCCESS:
                message = report.failure
            self._account(hook, label, status, report.rows, event)
        else:
            metrics.run_finished(self.run_kind, status)
        self._lineage_details = dict(details or {})
        if status == SUCCESS and final is not None and final.outcome is not PipelineOutcome.SUCCESS:
            raise AirflowException(
                f"{label}: the wait saw it complete, but its final status says otherwise: "
                f"{report.failure if report else final.progress_summary()}"
            )
        if status == SUCCESS or (status == FAILED and self.accept_failure(details)):
            try:
                result = self.on_success(context, hook, run_id, details)
            except (DuneConfigurationError, DuneDatapointLimitError, DunePartialResultError) as err:
                run_registry.forget(context)
                # The same run, the same settings: another try would fail the same way.
                raise AirflowFailException(str(err)) from None
            run_registry.forget(context)
            if status == SUCCESS:
                self._record_duration(event)
            emit_asset_events(context, self.outlets, self.refreshed_objects(details or {}), self.log)
            return result
        cancelled = self.cancel_running(run_id, details, final)
        if cancelled:
            message += f"\nCancelled {cancelled} still-running {self.cancelled_noun} so they use no more credits."
        if status == TIMEOUT and self.timeout is not None:
            message += f"\nTimeout was {self.timeout:g} s; raise `timeout` if the run legitimately needs longer."
        self._lineage_error = message
        reason = permanent_run_failure(details) if status == FAILED else None
        if reason is not None:
            run_registry.forget(context)
            raise AirflowFailException(not_retried(message, reason, "start another billed run that fails"))
        self._remember_for_next_try(context, run_id, status, message)
        raise AirflowException(message)

    def _account(
        self, hook: DuneHook, label: str, status: str, rows: list[ReportRow], event: Mapping[str, Any] | None
    ) -> None:
        """Warn when the run cost more than the connection's ``run_credit_warning`` and send the run's metrics;
        never fails the task."""
        cost = total_credits(rows)
        timing = (event or {}).get("timing")
        seen_at = _number(timing.get("finished_seen_at")) if isinstance(timing, Mapping) else None
        lag = detection_delay(rows, seen_at) if seen_at is not None else None
        try:
            warning = run_cost_warning(cost, hook.settings.credit_guard, label)
        except DuneError:
            warning = None
        if warning:  # the report's title already says what the run cost
            self.log.warning("%s", warning)
        metrics.run_finished(self.run_kind, status, credits=cost, detection_lag=lag)

    def _read_final_status(
        self, hook: DuneHook, run_id: str, event_status: str
    ) -> tuple[Snapshot | None, DuneError | None]:
        """The run's status once the wait ended (the one the worker holds, else one read), or why it could not be
        read. After a success event a failed read fails the task, keeping the run's record so that the next
        try re-attaches to it."""
        held, self._final_status = self._final_status, None
        if held is not None and held.outcome.is_final:
            return held, None
        try:
            return self.get_status(hook, run_id), None
        except DuneError as err:
            if event_status != SUCCESS:
                return None, err
            raise AirflowException(
                f"{self.run_label(run_id)} completed, but its final status could not be read to report it: {err}. "
                "Not reported as a success without it: the next try of this task re-attaches to this run (no new "
                "run, no credits) once Dune answers; with no retries left, clear the task."
            ) from None

    def _remember_for_next_try(self, context: Context, run_id: str, status: str, message: str) -> None:
        """Keep what this run was for the log of the next try, when Airflow will retry the task."""
        ti = context["ti"]
        tries, max_tries = getattr(ti, "try_number", None), getattr(ti, "max_tries", None)
        if not (isinstance(tries, int) and isinstance(max_tries, int) and tries <= max_tries):
            run_registry.forget(context)
            return
        try:
            fingerprint = self.request_fingerprint(self.build_request(allow_templates=False))
        except Exception:  # nothing to compare with: the next try starts a new run anyway
            fingerprint = ""
        summary = " / ".join(line.strip() for line in message.splitlines() if line.strip())[:400] or status
        run_registry.remember_ended(context, run_id, fingerprint, outcome=status, summary=summary, try_number=tries)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """A trigger that failed or timed out in the triggerer (Airflow's ``__fail__``): cancel what still runs
        and forget the run before Airflow fails the task."""
        if next_method == "__fail__":
            try:
                run_id = run_registry.recall_any(context)
            except run_registry.RunRecordUnavailable as err:
                self.log.warning("Nothing cancelled: %s", err)
                run_id = None
            if run_id:
                self.run_id = run_id
                self.cancel_running(run_id, None)
            run_registry.forget(context)
        return super().resume_execution(next_method, next_kwargs, context)

    def cancel_running(self, run_id: str, details: Mapping[str, Any] | None, status: Snapshot | None = None) -> int:
        """Best effort: cancel every execution of the run that has started and not finished; return how many.

        Not held back by the key's budget: stopping billed work comes before pacing.

        :param status: the run's status, when just read.
        """
        hook = self.hook
        hook.deadline = time.time()
        try:
            running = self.running_executions(hook, run_id, details, status)
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
        """Cancel running executions when the task is killed (or hits ``execution_timeout``) in the worker."""
        if self.cancel_on_kill and self.run_id:
            self.cancel_running(self.run_id, None)
        if self._context is not None and self.cancel_on_kill:
            run_registry.forget(self._context)
