"""The example DAGs: they parse, use the provider's operators sensibly, and really run (and defer) in Airflow."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.schedules import RUN_DATE
from airflow_provider_dune.sensors.pipeline import DunePipelineSensor
from airflow_provider_dune.version_compat import AIRFLOW_V_3_0_PLUS
from example_dags.demo import DAGS_FOLDER
from tests.dags.conftest import DAG_TEST_API_KEY, airflow_command, dag_test_env

CRON_DAG_IDS = {"dune_nightly_refresh", "dune_explicit_pipeline", "dune_trigger_then_sense", "dune_refresh_many"}
# Scheduled on Dune assets; the AssetWatcher one needs Airflow 3.
ASSET_DAG_IDS = {"dune_after_nightly_refresh"} | ({"dune_on_view_refresh"} if AIRFLOW_V_3_0_PLUS else set())
MANUAL_DAG_IDS = {"dune_as_code", "dune_queries_views_and_data", "dune_connection_check"}
EXPECTED_DAG_IDS = CRON_DAG_IDS | ASSET_DAG_IDS | MANUAL_DAG_IDS
NOT_DAG_FILES = ("__init__.py", "demo.py")
DAG_FILES = sorted(p.name for p in DAGS_FOLDER.glob("*.py") if p.name not in NOT_DAG_FILES)
LOGICAL_DATE = "2024-06-01"
PIPELINE_TRIGGER = "airflow_provider_dune.triggers.pipeline.DunePipelineTrigger"
EXECUTION_TRIGGER = "airflow_provider_dune.triggers.execution.DuneExecutionTrigger"


# -- parsing -------------------------------------------------------------------------------------------------


def _dagbag() -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 2
        from airflow.models import DagBag
    try:
        return DagBag(dag_folder=str(DAGS_FOLDER), include_examples=False)
    except TypeError:  # Airflow 3.1+: no example DAGs in the DagBag any more
        return DagBag(dag_folder=str(DAGS_FOLDER))


@pytest.fixture(scope="module")
def dagbag(monkeypatch_module: pytest.MonkeyPatch) -> Any:
    for name in ("DUNE_POLL_INTERVAL", "DUNE_NIGHTLY_QUERY_ID", "DUNE_CONN_ID", "DUNE_REFRESH_QUERY_IDS"):
        monkeypatch_module.delenv(name, raising=False)
    return _dagbag()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Any:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _cron_expression(dag: Any) -> str:
    timetable = dag.timetable  # the task SDK's timetables are attrs classes, the core ones keep _expression
    return str(getattr(timetable, "expression", None) or timetable._expression)


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_expected_dag_ids(dagbag):
    assert set(dagbag.dag_ids) == EXPECTED_DAG_IDS


def test_every_dag_file_defines_a_dag(dagbag):
    files_with_dags = {Path(dag.fileloc).name for dag in dagbag.dags.values()}
    assert files_with_dags == set(DAG_FILES)


def test_demo_driver_and_helpers_are_not_parsed_as_dag_files():
    ignore = (DAGS_FOLDER / ".airflowignore").read_text()
    assert "demo" in ignore


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAG_IDS))
def test_dags_are_tagged_documented_and_not_catching_up(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert "dune" in dag.tags
    assert dag.doc_md and len(dag.doc_md) > 200
    assert dag.catchup is False
    assert dag.max_active_runs == 1


def test_nightly_refresh(dagbag):
    dag = dagbag.dags["dune_nightly_refresh"]
    assert _cron_expression(dag) == "0 3 * * *"
    (task,) = dag.tasks
    assert isinstance(task, DuneExecutePipelineOperator)
    assert task.query_id == 1001
    assert task.nodes is None
    assert task.query_parameters == {"date": RUN_DATE}
    assert task.deferrable is True
    assert task.wait_for_completion is True
    assert task.poll_interval == 30.0
    assert task.timeout is not None and task.timeout > task.poll_interval
    assert task.dune_conn_id == "dune_default"
    assert task.retries >= 1


def test_explicit_pipeline(dagbag):
    dag = dagbag.dags["dune_explicit_pipeline"]
    (task,) = dag.tasks
    assert isinstance(task, DuneExecutePipelineOperator)
    assert task.query_id is None
    assert task.deferrable is True
    nodes = {node["id"]: node for node in task.nodes}
    assert set(nodes) == {1, 2, 3}
    assert nodes[1]["query_execution"]["query_id"] == 1000
    assert nodes[2]["dependencies"] == [1]
    assert nodes[2]["materialized_view_refresh"]["name"] == "dune.demo.result_dex_trades_daily"
    assert nodes[3]["dependencies"] == [2]
    assert nodes[3]["query_execution"]["query_id"] == 1001


def test_trigger_then_sense(dagbag):
    dag = dagbag.dags["dune_trigger_then_sense"]
    start, wait = dag.get_task("start_pipeline"), dag.get_task("wait_for_pipeline")
    assert isinstance(start, DuneExecutePipelineOperator)
    assert isinstance(wait, DunePipelineSensor)
    assert start.wait_for_completion is False
    assert start.retries == 0
    assert wait.deferrable is True
    assert "start_pipeline" in wait.pipeline_execution_id
    assert "pipeline_execution_id" in wait.pipeline_execution_id
    assert wait.upstream_task_ids == {"start_pipeline"}


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAG_IDS))
def test_a_task_that_does_not_wait_for_its_run_is_not_retried(dag_id, dagbag):
    """Its run is not recorded for re-attachment once Dune accepted it, so a retry would pay for a second run."""
    for task in dagbag.dags[dag_id].tasks:
        if getattr(task, "wait_for_completion", True) is False:
            assert task.retries == 0, (dag_id, task.task_id)


def test_refresh_many_is_mapped(dagbag):
    dag = dagbag.dags["dune_refresh_many"]
    (task,) = dag.tasks
    assert task.operator_class is DuneExecutePipelineOperator
    assert task.partial_kwargs["deferrable"] is True
    assert task.partial_kwargs["max_active_tis_per_dag"] == 4
    expanded = task.expand_input.value
    assert [item["query_id"] for item in expanded] == [1001, 1003, 1005]


@pytest.mark.parametrize(
    ("logical_date", "run_after", "expected"),
    [
        (datetime(2024, 6, 1, 3, tzinfo=timezone.utc), datetime(2024, 6, 2, 3, tzinfo=timezone.utc), "2024-06-01"),
        (None, datetime(2026, 11, 25, 14, 7, tzinfo=timezone.utc), "2026-11-25"),
    ],
    ids=["scheduled-or-backfilled", "manual-without-logical-date"],
)
def test_run_date_renders_with_and_without_a_logical_date(dagbag, logical_date, run_after, expected):
    """Airflow 3 leaves ``ds``/``logical_date`` out of the context of a manual run without a logical date."""
    task = dagbag.dags["dune_nightly_refresh"].tasks[0]
    dag_run = SimpleNamespace(logical_date=logical_date, run_after=run_after)
    context = {"dag_run": dag_run} if logical_date is None else {"dag_run": dag_run, "ds": "unused"}
    rendered = task.render_template(task.query_parameters, context)
    assert rendered == {"date": expected}


@pytest.mark.parametrize("dag_id", sorted(EXPECTED_DAG_IDS))
def test_every_example_template_avoids_keys_a_manual_run_may_lack(dag_id, dagbag):
    templated = json.dumps(
        [getattr(t, "query_parameters", None) or getattr(t, "nodes", None) for t in dagbag.dags[dag_id].tasks]
        + [getattr(t, "partial_kwargs", {}).get("query_parameters") for t in dagbag.dags[dag_id].tasks]
        + [
            json.dumps(getattr(getattr(t, "expand_input", None), "value", None), default=str)
            for t in dagbag.dags[dag_id].tasks
        ]
    )
    for key in ("ds", "ds_nodash", "ts", "logical_date", "data_interval_start", "data_interval_end", "execution_date"):
        assert f"{{{{ {key}" not in templated and f"{{{{{key}" not in templated, (dag_id, key)


@pytest.mark.skipif(not AIRFLOW_V_3_0_PLUS, reason="Airflow 2.11's timetables always run the latest interval")
@pytest.mark.parametrize("dag_id", sorted(CRON_DAG_IDS))
def test_unpausing_starts_no_run_for_a_past_schedule_time(dag_id, dagbag, monkeypatch):
    """The trigger dialog unpauses by default: that must not add a second, scheduled (billed) run."""
    import airflow.timetables.trigger as trigger_timetables

    try:  # Airflow 3.2+
        from airflow.serialization.serialized_objects import DagSerialization as serialization
    except ImportError:  # Airflow 3.0/3.1: SerializedDAG serializes itself
        from airflow.serialization.serialized_objects import SerializedDAG as serialization

    # The DAG as the scheduler sees it: serialized to JSON and back.
    dag = serialization.from_dict(json.loads(json.dumps(serialization.to_dict(dagbag.dags[dag_id]))))
    timetable = dag.timetable
    # just after a scheduled time: the moment a "run the latest one" rule would fire
    now = timetable._get_next(timetable._align_to_prev(datetime(2026, 11, 25, 12, tzinfo=timezone.utc)))
    now = now + timedelta(minutes=1)
    monkeypatch.setattr(trigger_timetables, "utcnow", lambda: now)
    info = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=dag._time_restriction)
    assert info is not None and info.run_after > now, f"{dag_id} would run {info} right after being unpaused"


# -- running through `airflow dags test` ---------------------------------------------------------------------


def _dags_test(
    home: Path,
    emulator: Any,
    dag_id: str,
    *,
    key_in_extra: bool = False,
    task_id: str | None = None,
    conf: dict[str, Any] | None = None,
    wrong_key: str | None = None,
    dags_folder: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``airflow dags test dag_id`` (``airflow tasks test dag_id task_id`` with ``task_id``) on the example DAGs
    (or ``dags_folder``); the API key (in Password, or ``api_key`` in the extra) is never printed. ``conf`` is
    the run's configuration; with ``wrong_key``, connection ``dune_wrong_key`` holds that key, which must not be
    printed either."""
    extra: dict[str, Any] = {"timeout": 5, "retry_min_wait": 0.05, "retry_max_wait": 0.2, "reads_per_minute": 0}
    conn: dict[str, Any] = {"conn_type": "dune", "host": emulator.url, "extra": extra}
    if key_in_extra:
        extra["api_key"] = DAG_TEST_API_KEY
    else:
        conn["password"] = DAG_TEST_API_KEY
    env = dag_test_env(home, json.dumps(conn))
    if wrong_key:
        env["AIRFLOW_CONN_DUNE_WRONG_KEY"] = json.dumps({**conn, "password": wrong_key})
    if dags_folder is not None:
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
        # What a DAG processor does: the DAGs, their assets and aliases in the metadata DB (Airflow 2.11's
        # `dags test` records no event for a dataset or alias it does not find there).
        setup = subprocess.run(
            [*airflow_command(), "dags", "reserialize"], env=env, capture_output=True, text=True, timeout=180
        )
        assert setup.returncode == 0, _output(setup)[-4000:]
    result = subprocess.run(
        [
            *airflow_command(),
            *(["tasks", "test", dag_id, task_id] if task_id else ["dags", "test", dag_id]),
            LOGICAL_DATE,
            *(["--conf", json.dumps(conf)] if conf else []),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    printed = _output(result)
    for key in (DAG_TEST_API_KEY, wrong_key):
        if key:
            assert key not in printed, printed[max(0, printed.find(key) - 2000) :][:3000]
    return result


def _last_log_id(home: Path) -> int:
    """The newest row of the ``log`` table: Airflow 2 reuses a run for the same logical date, keeping its rows."""
    with contextlib.closing(sqlite3.connect(home / "airflow.db")) as db:
        return int(db.execute("SELECT COALESCE(MAX(id), 0) FROM log").fetchone()[0])


def _run_record(home: Path, dag_id: str, *, after_log_id: int = 0) -> dict[str, Any]:
    """The newest run of ``dag_id``; its tasks' ``log`` events only from rows after ``after_log_id``."""
    with contextlib.closing(sqlite3.connect(home / "airflow.db")) as db:
        run_id, state = db.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
        tasks = {
            task_id: {"state": ti_state, "try_number": try_number}
            for task_id, ti_state, try_number in db.execute(
                "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
                (dag_id, run_id),
            )
        }
        for task_id, task in tasks.items():
            task["events"] = [
                row[0]
                for row in db.execute(
                    "SELECT event FROM log WHERE dag_id = ? AND run_id = ? AND task_id = ? AND id > ? ORDER BY id",
                    (dag_id, run_id, task_id, after_log_id),
                )
            ]
        xcoms = {
            (task_id, key): json.loads(value) if isinstance(value, (str, bytes)) else value  # SQLite: 42 for JSON 42
            for task_id, key, value in db.execute(
                "SELECT task_id, key, value FROM xcom WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
            )
        }
        triggers = [row[0] for row in db.execute("SELECT classpath FROM trigger")]
    return {"state": state, "tasks": tasks, "xcoms": xcoms, "triggers": triggers}


def _asset_events(home: Path, dag_id: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The asset (dataset) events the newest run of ``dag_id`` recorded, by (task id, URI): each one's extra and
    the aliases it was recorded through."""
    asset, alias = ("asset", "asset_alias") if AIRFLOW_V_3_0_PLUS else ("dataset", "dataset_alias")
    with contextlib.closing(sqlite3.connect(home / "airflow.db")) as db:
        (run_id,) = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
        ).fetchone()
        rows = db.execute(
            f"SELECT e.id, e.source_task_id, a.uri, e.extra FROM {asset}_event e JOIN {asset} a ON a.id = e.{asset}_id"
            " WHERE e.source_dag_id = ? AND e.source_run_id = ? ORDER BY e.id",
            (dag_id, run_id),
        ).fetchall()
        events: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for event_id, task_id, uri, extra in rows:
            through = sorted(
                name
                for (name,) in db.execute(
                    f"SELECT x.name FROM {alias} x JOIN {alias}_{asset}_event l ON l.alias_id = x.id"
                    " WHERE l.event_id = ?",
                    (event_id,),
                )
            )
            events.setdefault((task_id, uri), []).append({"extra": json.loads(extra or "{}"), "aliases": through})
    return events


def _status_polls_after_single_execute(emulator: Any) -> int:
    requests = emulator.requests
    executes = [r for r in requests if r.endpoint == "execute_query_pipeline"]
    assert len(executes) == 1
    polls = [r for r in requests if r.endpoint == "get_pipeline_status"]
    assert all(p.at >= executes[0].at for p in polls)
    assert all(p.status == 200 for p in polls)
    return len(polls)


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return result.stdout + result.stderr


#: A deferred task's states, in the order ``dags test`` goes through them.
DEFERRED_HISTORY = ["running", "deferred", "running", "success"]


def _in_order_within(events: list[str], history: list[str]) -> bool:
    """``events`` are some of ``history``'s, in its order (a version may record only some of them)."""
    remaining = iter(history)
    return all(event in remaining for event in events)


def _assert_deferred_and_resumed(record: dict[str, Any], task_id: str, output: str, trigger_classpath: str) -> None:
    """The task went to a trigger and came back, judged by what each Airflow version records of ``dags test``.

    Every version runs the trigger in line once and says so. Airflow 3 also keeps the trigger row and logs the
    deferral; Airflow 2 deletes the row. The per-state rows of the ``log`` table differ: 3.3 writes all four,
    3.2 some, 3.0 and 3.1 none, 2.11 only ``success``; whatever is there must follow a deferral's history.
    """
    task = record["tasks"][task_id]
    assert task["state"] == "success"
    assert output.count("[DAG TEST] running trigger in line") == 1
    assert "[DAG TEST] Trigger completed" in output
    assert _in_order_within(task["events"], DEFERRED_HISTORY), task["events"]
    if AIRFLOW_V_3_0_PLUS:
        assert trigger_classpath in record["triggers"]
        assert "Pausing task as DEFERRED" in output


def _files(home: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in home.rglob("*") if p.is_file()}


@pytest.mark.dag
@pytest.mark.parametrize("key_in_extra", [False, True], ids=["key-in-password", "key-in-extra"])
def test_nightly_refresh_runs_and_defers(migrated_airflow_home, dag_test_emulator, key_in_extra):
    """... and the API key (in Password, or ``api_key`` in the extra) is printed nowhere (``_dags_test`` checks
    the output of the task and its in-line trigger) and written in no file under AIRFLOW_HOME (task logs where
    this Airflow writes them, the metadata DB), although it really was read and sent."""
    before = _files(migrated_airflow_home)
    last_log_id = _last_log_id(migrated_airflow_home)
    result = _dags_test(migrated_airflow_home, dag_test_emulator, "dune_nightly_refresh", key_in_extra=key_in_extra)
    output = _output(result)
    assert result.returncode == 0, output[-6000:]
    record = _run_record(migrated_airflow_home, "dune_nightly_refresh", after_log_id=last_log_id)
    assert record["state"] == "success", output[-6000:]

    task = record["tasks"]["refresh_daily_dex_volume"]
    assert task["state"] == "success"
    assert task["try_number"] == 1
    _assert_deferred_and_resumed(record, "refresh_daily_dex_volume", output, PIPELINE_TRIGGER)
    assert "running trigger in line" in output

    counts = dag_test_emulator.counts
    assert counts["execute_query_pipeline"] == 1
    # One status call by the task before deferring, then several by the trigger while the pipeline ran.
    assert _status_polls_after_single_execute(dag_test_emulator) >= 3
    assert dag_test_emulator.executions_started(1001) == 1

    execute = next(r for r in dag_test_emulator.requests if r.endpoint == "execute_query_pipeline")
    assert execute.path.endswith("/v1/query/1001/pipeline/execute")
    assert execute.json_body["query_parameters"] == {"date": LOGICAL_DATE}

    summary = record["xcoms"][("refresh_daily_dex_volume", "return_value")]
    pipeline_id = record["xcoms"][("refresh_daily_dex_volume", "pipeline_execution_id")]
    assert summary["pipeline_execution_id"] == pipeline_id

    files = _files(migrated_airflow_home)
    assert [p for p in files if before.get(p) != files[p]], "the run wrote nothing under AIRFLOW_HOME"
    assert [str(p) for p in files if DAG_TEST_API_KEY.encode() in p.read_bytes()] == []
    assert summary["outcome"] == "success"
    assert [(n["kind"], n["state"]) for n in summary["nodes"]] == [
        ("materialized_view_refresh", "completed"),
        ("query_execution", "completed"),
    ]
    # What the run cost: per node and in all, in the XCom and in the task's log.
    assert all(n["credits"] > 0 for n in summary["nodes"]), summary
    assert summary["total_credits"] == pytest.approx(sum(n["credits"] for n in summary["nodes"]))
    title = f"Dune pipeline {pipeline_id}: success, 2/2 nodes done, {summary['total_credits']:,.2f} credits"
    assert title in output, output[-6000:]
    if AIRFLOW_V_3_0_PLUS:  # 2.11's `dags test` records no event for a dataset it did not write to the DB
        # One asset event per refreshed object: the query on its declared outlet, the view through the alias.
        events = _asset_events(migrated_airflow_home, "dune_nightly_refresh")
        assert {uri: [e["aliases"] for e in found] for (_, uri), found in events.items()} == {
            "dune://queries/1001": [[]],
            "dune://views/dune.demo.result_dex_trades_daily": [["dune_nightly_refreshed_views"]],
        }
        assert {e["extra"]["pipeline_execution_id"] for found in events.values() for e in found} == {pipeline_id}


ASSET_EVENTS_DAG = """
from datetime import datetime

try:
    from airflow.sdk import DAG, AssetAlias
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.datasets import DatasetAlias as AssetAlias

from airflow_provider_dune.assets import dune_query_asset, dune_view_asset
from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator

VIEW = "dune.demo.result_dex_trades_daily"
OUTLETS = {
    "outlets_only": [dune_query_asset(1001), dune_view_asset(VIEW)],
    "alias_only": [AssetAlias("alias_only")],
    "outlet_and_alias": [dune_query_asset(1001), AssetAlias("outlet_and_alias")],
    "two_aliases": [AssetAlias("first_alias"), AssetAlias("second_alias")],
}

with DAG("dune_asset_event_counts", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    for task_id, outlets in OUTLETS.items():
        # query 1001's pipeline refreshes the view, then runs the query
        DuneExecutePipelineOperator(
            task_id=task_id, query_id=1001, poll_interval=0.4, deferrable=task_id == "outlet_and_alias", outlets=outlets
        )
"""


@pytest.mark.dag
def test_each_refreshed_object_gets_one_asset_event_per_run(migrated_airflow_home, dag_test_emulator, tmp_path):
    """Outlets only, an alias only, an outlet and an alias, two aliases: one event per refreshed object and task,
    with the run's execution ids, counted in Airflow's metadata DB."""
    (tmp_path / "dune_asset_event_counts.py").write_text(ASSET_EVENTS_DAG)
    result = _dags_test(migrated_airflow_home, dag_test_emulator, "dune_asset_event_counts", dags_folder=tmp_path)
    output = _output(result)
    assert result.returncode == 0, output[-6000:]
    record = _run_record(migrated_airflow_home, "dune_asset_event_counts")
    assert {task["state"] for task in record["tasks"].values()} == {"success"}, output[-6000:]
    query, view = "dune://queries/1001", "dune://views/dune.demo.result_dex_trades_daily"
    through = {
        "outlets_only": {query: [], view: []},
        "alias_only": {query: ["alias_only"], view: ["alias_only"]},
        "outlet_and_alias": {query: [], view: ["outlet_and_alias"]},
        "two_aliases": {query: ["first_alias", "second_alias"], view: ["first_alias", "second_alias"]},
    }
    events = _asset_events(migrated_airflow_home, "dune_asset_event_counts")
    assert {key: [e["aliases"] for e in found] for key, found in events.items()} == {
        (task_id, uri): [aliases] for task_id, expected in through.items() for uri, aliases in expected.items()
    }
    for (task_id, uri), (event,) in events.items():
        summary = record["xcoms"][(task_id, "return_value")]
        node = next(n for n in summary["nodes"] if uri.endswith(str(n["view_name"] or n["query_id"])))
        assert event["extra"] == {
            "pipeline_execution_id": summary["pipeline_execution_id"],
            "execution_id": node["execution_id"],
            "credits": node["credits"],
        }
    assert dag_test_emulator.counts["execute_query_pipeline"] == len(through)


@pytest.mark.dag
def test_dune_as_code_syncs_runs_and_exports_without_a_second_run(migrated_airflow_home, dag_test_emulator):
    result = _dags_test(migrated_airflow_home, dag_test_emulator, "dune_as_code")
    output = _output(result)
    assert result.returncode == 0, output[-6000:]
    record = _run_record(migrated_airflow_home, "dune_as_code")
    assert record["state"] == "success", output[-6000:]
    query_id = record["xcoms"][("sync_query", "return_value")]
    created = next(r for r in dag_test_emulator.requests if r.endpoint == "create_query")
    sql = (Path(DAGS_FOLDER) / "sql" / "dex_volume_7d.sql").read_text().strip()
    assert created.json_body["query_sql"] == sql  # the file, read through the .sql template
    assert dag_test_emulator.executions_started(query_id) == 1  # the pipeline; the export reused its result
    assert "execute_query" not in dag_test_emulator.counts
    export = record["xcoms"][("export", "return_value")]
    assert export["row_count"] > 0 and Path(export["output_path"]).read_text().count("\n") == export["row_count"] + 1
    # A second run finds the query unchanged: nothing is saved again.
    again = _dags_test(migrated_airflow_home, dag_test_emulator, "dune_as_code")
    assert again.returncode == 0, _output(again)[-6000:]
    assert dag_test_emulator.counts["create_query"] == 1 and "update_query" not in dag_test_emulator.counts


@pytest.mark.dag
def test_queries_views_and_data_runs_every_task_once(migrated_airflow_home, dag_test_emulator):
    dag_id = "dune_queries_views_and_data"
    result = _dags_test(migrated_airflow_home, dag_test_emulator, dag_id)
    output = _output(result)
    assert result.returncode == 0, output[-6000:]
    record = _run_record(migrated_airflow_home, dag_id)
    assert record["state"] == "success", output[-6000:]
    assert {task["state"] for task in record["tasks"].values()} == {"success"}, record["tasks"]
    xcoms = record["xcoms"]
    price = xcoms[("token_price", "return_value")]
    assert price["rows"] and price["row_count"] == len(price["rows"])
    assert xcoms[("trades_count", "return_value")]["rows"]
    assert xcoms[("pools_of_the_day", "return_value")]["rows"]
    view = xcoms[("define_volume_view", "return_value")]
    assert view["name"] == "dune.demo.result_token_prices_daily" and view["execution_id"]
    upload = xcoms[("load_token_labels", "return_value")]
    assert upload["rows_sent"] == upload["rows_written"] == 4
    # The waits went to the triggerer (a task whose run ended before its first status read does not defer).
    assert "[DAG TEST] running trigger in line" in output
    for task in record["tasks"].values():
        assert _in_order_within(task["events"], DEFERRED_HISTORY), record["tasks"]
    if AIRFLOW_V_3_0_PLUS:
        assert EXECUTION_TRIGGER in record["triggers"]
        assert "Pausing task as DEFERRED" in output
    sql = next(r for r in dag_test_emulator.requests if r.endpoint == "execute_sql").json_body["sql"]
    assert f"DATE '{LOGICAL_DATE[:10]}'" in sql  # the run's date, rendered
    # One billed run per task that starts one; the view refresh, the upsert and each query once.
    assert dag_test_emulator.executions_started(1003) == dag_test_emulator.executions_started(1001) == 1
    assert dag_test_emulator.counts["execute_sql"] == 2
    assert dag_test_emulator.counts["refresh_materialized_view"] == 1
    assert dag_test_emulator.counts["upsert_materialized_view"] == 1
    # Running the view's task again leaves the view alone: its definition did not change, and an upsert is a
    # billed refresh (one task, `airflow tasks test`: a whole second DAG run costs Airflow ~50 s of CPU on 3.2).
    reads = dag_test_emulator.counts.get("get_materialized_view", 0)
    again = _dags_test(migrated_airflow_home, dag_test_emulator, dag_id, task_id="define_volume_view")
    assert again.returncode == 0, _output(again)[-6000:]
    assert dag_test_emulator.counts.get("get_materialized_view", 0) > reads, "the task did not run"
    assert dag_test_emulator.counts["upsert_materialized_view"] == 1


@pytest.mark.dag
def test_trigger_then_sense_runs_and_sensor_defers(migrated_airflow_home, slow_pipelines_emulator):
    dag_test_emulator = slow_pipelines_emulator  # the sensor starts seconds after the pipeline: it must not be done
    result = _dags_test(migrated_airflow_home, dag_test_emulator, "dune_trigger_then_sense")
    output = _output(result)
    assert result.returncode == 0, output[-6000:]
    record = _run_record(migrated_airflow_home, "dune_trigger_then_sense")
    assert record["state"] == "success", output[-6000:]

    start, wait = record["tasks"]["start_pipeline"], record["tasks"]["wait_for_pipeline"]
    assert start["state"] == "success"
    assert "deferred" not in start["events"], "wait_for_completion=False must not wait"
    assert wait["state"] == "success"
    _assert_deferred_and_resumed(record, "wait_for_pipeline", output, PIPELINE_TRIGGER)

    counts = dag_test_emulator.counts
    assert counts["execute_query_pipeline"] == 1
    assert _status_polls_after_single_execute(dag_test_emulator) >= 3
    pipeline_id = record["xcoms"][("start_pipeline", "pipeline_execution_id")]
    polled = {r.path.rsplit("/", 2)[-2] for r in dag_test_emulator.requests if r.endpoint == "get_pipeline_status"}
    assert polled == {pipeline_id}
    # Query 1005's lineage is a diamond of three views plus the query: four nodes, all completed.
    request = urllib.request.Request(
        f"{dag_test_emulator.url}/v1/pipelines/executions/{pipeline_id}/status",
        headers={"X-Dune-Api-Key": DAG_TEST_API_KEY},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        status = json.loads(response.read())
    assert status["status"] == "completed"
    assert len(status["node_executions"]) == 4


@pytest.mark.dag
def test_connection_check_reports_the_credits_with_a_good_key(migrated_airflow_home, dag_test_emulator):
    """The DAG a user triggers from the UI to check a connection: one free ``POST /v1/usage``, logged."""
    result = _dags_test(migrated_airflow_home, dag_test_emulator, "dune_connection_check")
    output = _output(result)
    assert result.returncode == 0, output[-6000:]
    record = _run_record(migrated_airflow_home, "dune_connection_check")
    assert record["state"] == "success", output[-6000:]
    message = record["xcoms"][("check_connection", "return_value")]
    assert message.startswith(f"Connected to Dune at {dag_test_emulator.url} with Airflow connection 'dune_default'")
    assert "0 of 2500 credits used this billing period (" in message
    assert message in output  # the task's log
    assert [r.endpoint for r in dag_test_emulator.requests] == ["get_usage"]


@pytest.mark.dag
def test_connection_check_names_the_api_key_field_with_a_wrong_key(migrated_airflow_home, dag_test_emulator):
    """The connection id comes from the run's params; a wrong key fails the task with the form's field name,
    and the key is printed nowhere (``_dags_test``) and written in no file under AIRFLOW_HOME."""
    wrong_key = "wrong-connection-check-key-7f3a"
    result = _dags_test(
        migrated_airflow_home,
        dag_test_emulator,
        "dune_connection_check",
        conf={"dune_conn_id": "dune_wrong_key"},
        wrong_key=wrong_key,
    )
    output = _output(result)
    record = _run_record(migrated_airflow_home, "dune_connection_check")
    assert record["state"] == "failed", output[-6000:]
    assert record["tasks"]["check_connection"]["state"] == "failed"
    assert "HTTP 401" in output, output[-6000:]
    assert "Check the API Key field of Airflow connection 'dune_wrong_key'" in output, output[-6000:]
    assert [(r.endpoint, r.status) for r in dag_test_emulator.requests] == [("get_usage", 401)]  # not retried
    files = _files(migrated_airflow_home)
    assert [str(p) for p in files if wrong_key.encode() in p.read_bytes()] == []
