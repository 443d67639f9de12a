"""Both sensors check the run id they are given: at parse time when it is a literal, before any request once it
is rendered, and say where the id should come from."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.sensors.base import DuneRunSensor
from airflow_provider_dune.sensors.execution import DuneExecutionSensor
from airflow_provider_dune.sensors.pipeline import DunePipelineSensor
from airflow_provider_dune.testing.emulator import DuneEmulator
from airflow_provider_dune.version_compat import AirflowFailException

SENSORS = pytest.mark.parametrize(
    ("sensor_class", "started_by"),
    [(DuneExecutionSensor, "DuneExecuteQueryOperator"), (DunePipelineSensor, "DuneExecutePipelineOperator")],
    ids=["execution", "pipeline"],
)


def _sensor(sensor_class: type[DuneRunSensor], run_id: Any) -> DuneRunSensor:
    return sensor_class(task_id="wait", mode="poke", deferrable=False, **{sensor_class.id_field: run_id})


@SENSORS
@pytest.mark.parametrize("bad_id", ["", "  ", "abc/../../x", None])
def test_invalid_id_is_refused_when_the_dag_is_parsed(
    sensor_class: type[DuneRunSensor], started_by: str, bad_id: Any
) -> None:
    with pytest.raises(DuneConfigurationError) as info:
        _sensor(sensor_class, bad_id)
    assert sensor_class.id_field in str(info.value)
    assert f"key='{sensor_class.id_field}'" in str(info.value)  # says where the id should come from
    assert started_by in str(info.value)


@SENSORS
def test_an_id_that_renders_invalid_fails_before_any_request(
    sensor_class: type[DuneRunSensor], started_by: str, dune_emulator: DuneEmulator, dune_conn_id: str
) -> None:
    task = _sensor(sensor_class, "{{ ti.xcom_pull(task_ids='start') }}")  # accepted: only known once rendered
    setattr(task, sensor_class.id_field, "x y")  # what the template rendered to
    with pytest.raises(AirflowFailException) as info:
        task.poke({})
    assert f"key='{sensor_class.id_field}'" in str(info.value)
    assert not dune_emulator.counts
