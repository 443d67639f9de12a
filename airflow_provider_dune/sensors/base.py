"""Shared behaviour of the sensors that wait for a Dune run something else started."""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.configuration import conf
from airflow.exceptions import AirflowException

from airflow_provider_dune.api.errors import DuneConfigurationError, DuneError
from airflow_provider_dune.api.models import PipelineOutcome
from airflow_provider_dune.api.validation import validate_execution_id, validate_seconds
from airflow_provider_dune.hooks.dune import DuneHook
from airflow_provider_dune.polling import (
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
from airflow_provider_dune.utils.config import min_poll_interval
from airflow_provider_dune.version_compat import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class DuneRunSensor(BaseSensorOperator):
    """Wait until a Dune run finishes; fail with Dune's error if it did not succeed. Never cancels the run.

    Works in ``poke`` and ``reschedule`` modes, or deferred to the triggerer (``deferrable=True``). ``timeout``,
    ``poke_interval`` and ``soft_fail`` behave as for any Airflow sensor.

    :param dune_conn_id: Airflow connection of type ``dune`` (templated).
    :param deferrable: wait in the triggerer; defaults to Airflow's ``[operators] default_deferrable``.
    """

    #: Name of the run id argument and attribute (``pipeline_execution_id``, ``execution_id``).
    id_field: ClassVar[str]
    #: Trigger that waits for the run when deferred.
    trigger_class: ClassVar[type[DunePollingTrigger]]
    #: How the run is named in logs and errors, e.g. ``"Dune pipeline"``.
    run_noun: ClassVar[str]
    #: Operator whose XCom carries the id, for the error on a bad id.
    started_by: ClassVar[str]
    ui_color = "#ffd4c4"

    def __init__(
        self,
        *,
        dune_conn_id: str = DuneHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: timedelta | float = 30.0,
        **kwargs: Any,
    ) -> None:
        poke_seconds = validate_seconds(poke_interval, "poke_interval", minimum=min_poll_interval())
        if "timeout" in kwargs:  # checked before Airflow's own check, which accepts NaN and raises a ValueError
            kwargs["timeout"] = validate_seconds(kwargs["timeout"], "timeout")
        super().__init__(poke_interval=poke_seconds, **kwargs)
        self.dune_conn_id = dune_conn_id
        self.deferrable = deferrable

    def _check_id_at_parse_time(self) -> None:
        """Refuse an id that can never be valid when the DAG is parsed (templates are checked when they render)."""
        value = getattr(self, self.id_field)
        if not (isinstance(value, str) and ("{{" in value or "{%" in value)):
            try:
                validate_execution_id(value, what=self.id_field)
            except DuneConfigurationError as err:
                raise DuneConfigurationError(
                    f"{err}. Pass the id pushed by {self.started_by}, e.g. "
                    f"\"{{{{ ti.xcom_pull(task_ids='<task>', key='{self.id_field}') }}}}\""
                ) from None

    @abstractmethod
    def fetch_status(self, hook: DuneHook, run_id: str) -> Snapshot:
        """Read the run's current status."""

    def accept_failure(self, details: Mapping[str, Any] | None) -> bool:
        """Whether a run that ended ``failed`` is acceptable after all (e.g. an allowed partial result)."""
        return False

    @property
    def run_id(self) -> str:
        return str(getattr(self, self.id_field))

    def _target(self) -> PollTarget:
        return PollTarget(self.id_field, self.run_id, f"{self.run_noun} {self.run_id}")

    def _validated_id(self) -> str:
        try:
            return validate_execution_id(getattr(self, self.id_field), what=self.id_field)
        except DuneConfigurationError as err:
            raise AirflowFailException(
                f"{err}. Pass the id pushed by {self.started_by}, e.g. "
                f"\"{{{{ ti.xcom_pull(task_ids='<task>', key='{self.id_field}') }}}}\""
            ) from None

    def poke(self, context: Context) -> bool:
        setattr(self, self.id_field, self._validated_id())
        with DuneHook(self.dune_conn_id) as hook:
            status = self.fetch_status(hook, self.run_id)
        # Each poke is the first read of a wait of its own: Airflow's sensor loop owns the waiting and the
        # timeout (and in reschedule mode runs every poke in a new process).
        schedule = ReadSchedule.for_run(float(self.poke_interval), started_at=None, durations=(), adaptive=False)
        event = PollingSession(self._target(), schedule, None, self.log).after_read(status, time.time()).event
        if event is None:
            return False
        if event["status"] == SUCCESS or (event["status"] == FAILED and self.accept_failure(status.to_dict())):
            return True
        # The run is over and did not succeed: re-poking cannot change that, so fail without retries.
        raise AirflowFailException(status.failure_message())

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        try:
            done = self.poke(context)
        except AirflowFailException as err:
            # BaseSensorOperator.execute applies soft_fail/never_fail; this path bypasses it, so do it here.
            if self.soft_fail or getattr(self, "never_fail", False):
                raise AirflowSkipException(f"Skipping due to soft_fail/never_fail: {err}") from err
            raise
        if done:
            return None
        now = time.time()
        run: dict[str, Any] = {self.id_field: self.run_id}
        self.defer(
            trigger=self.trigger_class(
                **run,
                dune_conn_id=self.dune_conn_id,
                poll_interval=float(self.poke_interval),
                end_time=now + float(self.timeout),
                cancel_on_kill=False,  # the sensor only watches someone else's run
                first_poll_at=now + float(self.poke_interval),  # poke() just read the status
            ),
            method_name="execute_complete",
            timeout=None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> None:
        """Act on the trigger's event. A success is the trigger's own read of a successful status; after a
        failure or an error the status is read once more, for Dune's whole error (the event's message is one
        shortened line) and to accept an allowed partial result (an event of an earlier release carries that
        status as ``details``)."""
        status, message, details = validate_event(event, self._target())
        if status in (FAILED, ERROR):
            try:
                with DuneHook(self.dune_conn_id) as hook:
                    final = self.fetch_status(hook, self.run_id)
            except DuneError as err:
                if status == ERROR:  # the event's message is shortened: this one says all
                    message = f"Could not get the status of {self._target().label}: {err}"
                else:
                    self.log.warning("Could not read the final status of %s: %s", self._target().label, err)
            else:
                details = final.to_dict()
                if final.outcome.is_final and final.outcome is not PipelineOutcome.SUCCESS:
                    message = final.failure_message()
        if status == SUCCESS or (status == FAILED and self.accept_failure(details)):
            self.log.info(message)
            return
        if status == TIMEOUT:
            raise AirflowSensorTimeout(f"{message} (sensor timeout {float(self.timeout):g} s)")
        if status == ERROR:
            raise AirflowException(message)
        raise AirflowFailException(message)
