"""A new user's first hour, on a real Airflow 3 stack with the example DAGs, checked where the user looks.

The stack is set up as a default installation is: users log in, new DAGs start paused, the Dune connection is
not defined by an environment variable (the user creates it), ``[core] test_connection`` is enabled as the
the documentation tells users to do. The emulator serves the demo catalog the example DAGs use.

In order: what the api-server serves for the connection form; a real browser creating the connection and
triggering the nightly refresh from the UI; every example DAG triggered through the REST API without a logical
date; ``airflow dags trigger`` and a backfill; testing the connection; and last the API key grep.
Run alone with ``python -m pytest tests/e2e/test_first_hour.py -m e2e -s``.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from airflow_provider_dune.api.connection_fields import EXTRA_SETTINGS
from airflow_provider_dune.version_compat import AIRFLOW_VERSION

from .browser import browser_page, missing_browser, screenshot
from .conftest import ADMIN_USER, AirflowStack, StackOptions

pytestmark = pytest.mark.e2e

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"
DAG_IDS = (
    "dune_nightly_refresh",
    "dune_explicit_pipeline",
    "dune_trigger_then_sense",
    "dune_refresh_many",
    "dune_queries_views_and_data",
)
#: Tasks that start one Dune pipeline each (dune_refresh_many maps over three queries).
PIPELINE_STARTS_PER_RUN = {
    "dune_nightly_refresh": 1,
    "dune_explicit_pipeline": 1,
    "dune_trigger_then_sense": 1,
    "dune_refresh_many": 3,
    "dune_queries_views_and_data": 0,  # queries, SQL, a view refresh, an upload: no pipeline
}
PIPELINE_STARTS = ("execute_query_pipeline", "execute_pipeline")
#: The row's Test button sends ``port: 0`` for a connection without a port and Airflow 3.3.2 and older answer
#: 400 (apache/airflow#73298 fixed it after 3.3.2). docs/connections/dune.rst, "Testing the connection", says so.
TEST_BUTTON_FIXED_AFTER = Version("3.3.2")

STACK_OPTIONS = StackOptions(
    dag_files={
        **{p.name: p.read_text() for p in EXAMPLE_DAGS.glob("dune_*.py")},
        **{f"sql/{p.name}": p.read_text() for p in (EXAMPLE_DAGS / "sql").glob("*.sql")},
        **{f"data/{p.name}": p.read_text() for p in (EXAMPLE_DAGS / "data").glob("*.csv")},
        ".airflowignore": (EXAMPLE_DAGS / ".airflowignore").read_text(),
    },
    dag_ids=DAG_IDS,
    parallelism=8,
    seed_emulator=True,
    connection_env=False,
    login=True,
    paused_at_creation=True,
    # DUNE_RETRY_DELAY: when Airflow's defer race fails a try (apache/airflow#67287), its retry comes in seconds,
    # not the example's 5 minutes.
    extra_env=(
        ("DUNE_POLL_INTERVAL", "1"),
        ("DUNE_RETRY_DELAY", "5"),
        ("AIRFLOW__CORE__TEST_CONNECTION", "Enabled"),
    ),
)


# -- helpers ---------------------------------------------------------------------------------------------


def _pipeline_starts(stack: AirflowStack) -> list[dict[str, Any]]:
    return [r for r in stack.emulator.requests() if r["endpoint"] in PIPELINE_STARTS and r["status"] == 200]


def _dag_runs(stack: AirflowStack, dag_id: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = stack.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]
    return runs


def _wait_run_states(stack: AirflowStack, runs: list[tuple[str, str]], timeout: float = 150) -> dict[Any, str]:
    """Wait until every (dag_id, run_id) ended; return their states."""
    deadline = time.monotonic() + timeout
    states: dict[Any, str] = {}
    while time.monotonic() < deadline:
        states = {
            (dag_id, run_id): stack.rest("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}")["state"]
            for dag_id, run_id in runs
        }
        stack.record_trigger_kwargs()
        if all(state in ("success", "failed") for state in states.values()):
            return states
        time.sleep(0.5)
    raise AssertionError(f"runs not finished after {timeout:.0f}s: {states}")


def _require_browser() -> None:
    """Skip without Chromium or Playwright (naming what is missing), unless DUNE_REQUIRE_BROWSER makes it fail."""
    reason = missing_browser()
    if reason and os.environ.get("DUNE_REQUIRE_BROWSER"):
        pytest.fail(f"DUNE_REQUIRE_BROWSER is set but {reason}")
    if reason:
        pytest.skip(f"browser test skipped: {reason}")


def _ensure_connection(stack: AirflowStack) -> None:
    """``dune_default`` as a user creates it through the REST API (the browser test creates it in the UI)."""
    try:
        stack.rest("GET", "/api/v2/connections/dune_default")
    except urllib.error.HTTPError as err:
        if err.code != 404:
            raise
        stack.rest(
            "POST",
            "/api/v2/connections",
            {
                "connection_id": "dune_default",
                "conn_type": "dune",
                "host": stack.emulator_url,
                "password": stack.api_key,
                "extra": json.dumps({"timeout": 5, "retry_min_wait": 0.2, "retry_max_wait": 1, "reads_per_minute": 0}),
            },
        )


def _run_dates_sent(stack: AirflowStack, after: float) -> list[str | None]:
    """The ``date`` parameter of each query-pipeline start of query 1001 after ``after`` (epoch seconds)."""
    return [
        ((r.get("json_body") or {}).get("query_parameters") or {}).get("date")
        for r in _pipeline_starts(stack)
        if r["at"] >= after and r["path"].endswith("/v1/query/1001/pipeline/execute")
    ]


def _tooltip_text(page: Any) -> str:
    """The text of the tooltip that opens (after its delay) on the hovered element, or ``""``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        return str(page.get_by_role("tooltip").filter(has_text="State:").first.inner_text(timeout=2_000))
    except PlaywrightTimeout:
        return ""


# -- what the api-server serves --------------------------------------------------------------------------


def test_the_api_server_serves_the_dune_connection_form(airflow_stack: AirflowStack) -> None:
    """The UI builds the form from this endpoint: the API key label, hidden unused fields, typed extras."""
    metadata = airflow_stack.rest("GET", "/ui/connections/hook_meta")
    (dune,) = [m for m in metadata if m["connection_type"] == "dune"]
    fields = dune["standard_fields"]
    assert fields["password"]["title"] == "API Key"
    assert fields["password"]["placeholder"]
    assert fields["host"] == {
        "hidden": False,
        "title": "API base URL (optional)",
        "placeholder": fields["host"]["placeholder"],
    }
    assert fields["host"]["placeholder"] == "https://api.dune.com/api"
    for name in ("login", "port", "url_schema"):
        assert fields[name]["hidden"] is True, name
    extra = dune["extra_fields"]
    assert list(extra) == [s.name for s in EXTRA_SETTINGS]
    for setting in EXTRA_SETTINGS:
        schema = extra[setting.name]["schema"]
        assert schema["type"] == [setting.kind, "null"], setting.name
        assert schema["title"] == setting.label
        assert extra[setting.name]["value"] is None, "no default is stored into the extra by the form"

    providers = airflow_stack.rest("GET", "/api/v2/providers")["providers"]
    (provider,) = [p for p in providers if p["package_name"] == "airflow-provider-dune"]
    assert "`" not in provider["description"] and "<" not in provider["description"], provider["description"]


# -- the web UI in a real browser ------------------------------------------------------------------------


def test_browser_connection_form_trigger_deferral_and_log(airflow_stack: AirflowStack) -> None:
    """Log in, create the Dune connection in the form, test it, trigger the nightly refresh without a logical
    date (unpausing on trigger, the dialog's default), watch the task defer and succeed, read its log."""
    _require_browser()
    stack = airflow_stack
    assert stack.admin_password is not None
    with browser_page(stack.base_url, ADMIN_USER, stack.admin_password) as page:
        # Admin -> Connections -> Add, type Dune
        page.goto(stack.base_url + "/connections")
        page.get_by_role("button", name="Add Connection").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("Connection ID").fill("dune_default")
        dialog.get_by_role("combobox").first.click()
        page.keyboard.type("Dune")
        page.get_by_role("option", name="Dune", exact=True).click()
        dialog.get_by_label("API Key").wait_for()
        labels = dialog.locator("label").all_inner_texts()
        for hidden in ("Login", "Port", "Schema", "Password", "Host"):
            assert hidden not in labels, f"{hidden!r} is shown: {labels}"
        assert "API base URL (optional)" in labels
        dialog.get_by_label("API base URL (optional)").fill(stack.emulator_url)
        dialog.get_by_label("API Key").fill(stack.api_key)
        screenshot(page, "connection-form", dialog)
        dialog.get_by_role("button", name="Extra Fields", exact=True).click()
        for setting in EXTRA_SETTINGS:
            dialog.get_by_label(setting.label).wait_for()
        dialog.get_by_label("Read timeout (seconds)").fill("5")
        dialog.get_by_label("First retry wait (seconds)").fill("0.2")
        screenshot(page, "connection-form-extras", dialog)
        dialog.get_by_role("button", name="Save").click()
        page.get_by_role("row").filter(has_text="dune_default").wait_for()
        saved = stack.rest("GET", "/api/v2/connections/dune_default")
        assert saved["conn_type"] == "dune" and saved["host"] == stack.emulator_url
        assert json.loads(saved["extra"])["timeout"] == 5

        # The row's Test button
        with page.expect_response(lambda r: r.url.endswith("/api/v2/connections/test")) as answer:
            page.get_by_role("row").filter(has_text="dune_default").get_by_role(
                "button", name="Test Connection"
            ).click()
        test_answer = answer.value
        if AIRFLOW_VERSION <= TEST_BUTTON_FIXED_AFTER:
            assert test_answer.status == 400
            assert "differs from the stored connection" in test_answer.text()
            page.get_by_text("Test Connection Failed").wait_for()
        else:
            assert test_answer.status == 200 and test_answer.json()["status"] is True, test_answer.text()

        # Trigger the nightly refresh from the UI, without a logical date
        starts_before = len(_pipeline_starts(stack))
        page.goto(stack.base_url + "/dags/dune_nightly_refresh")
        page.get_by_role("button", name="Trigger").first.click()
        trigger_dialog = page.get_by_role("dialog").filter(has_text="Trigger Dag")
        trigger_dialog.get_by_test_id("datetime-input").click()
        page.get_by_role("dialog").filter(has_text="UTC").get_by_role("button", name="Clear start date").click()
        trigger_dialog.get_by_text("Logical Date", exact=True).click()
        assert trigger_dialog.get_by_label(re.compile("Unpause dune_nightly_refresh on trigger")).is_checked()
        with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/dagRuns")) as posted:
            trigger_dialog.get_by_role("button", name="Trigger").click()
        assert json.loads(posted.value.post_data or "{}")["logical_date"] is None
        page.wait_for_url("**/runs/**")
        run_id = urllib.parse.unquote(page.url.rsplit("/runs/", 1)[1])

        # The grid: Deferred, then Success
        cell = page.get_by_test_id(f"grid-{run_id}-refresh_daily_dex_volume")
        seen: list[str] = []
        deadline = time.monotonic() + 120
        while "Success" not in seen and time.monotonic() < deadline:
            cell.hover()  # the grid shows a task's state in the tooltip of its cell
            state = re.search(r"State: (\w+)", _tooltip_text(page))
            if state and (not seen or seen[-1] != state.group(1)):
                seen.append(state.group(1))
                if state.group(1) == "Deferred":
                    screenshot(page, "deferred-run")
            page.mouse.move(700, 850)
            stack.record_trigger_kwargs()
            time.sleep(0.3)
        print(f"\n[e2e] UI-triggered run {run_id}: grid states seen {seen}")
        assert "Deferred" in seen and seen[-1] == "Success", seen
        assert seen.index("Deferred") < seen.index("Success")

        # The task log shows the pipeline and its progress
        page.goto(
            f"{stack.base_url}/dags/dune_nightly_refresh/runs/{urllib.parse.quote(run_id)}/tasks/refresh_daily_dex_volume"
        )
        page.get_by_text(re.compile(r"Started Dune pipeline \w+ for query 1001")).wait_for()
        log_text = page.locator("body").inner_text()
        assert re.search(r"Dune pipeline \w+: \d+/2 nodes done", log_text), log_text[-3000:]
        screenshot(page, "task-log")

    runs = _dag_runs(stack, "dune_nightly_refresh")
    assert [(r["dag_run_id"], r["run_type"], r["logical_date"]) for r in runs] == [(run_id, "manual", None)], runs
    starts = _pipeline_starts(stack)[starts_before:]
    assert len(starts) == 1, starts
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert starts[0]["json_body"]["query_parameters"] == {"date": today}


# -- every way a run starts, through the REST API and the CLI --------------------------------------------


def test_every_example_dag_runs_when_triggered_through_the_rest_api_without_a_logical_date(
    airflow_stack: AirflowStack,
) -> None:
    stack = airflow_stack
    _ensure_connection(stack)
    starts_before = len(_pipeline_starts(stack))
    runs_before = {dag_id: {r["dag_run_id"] for r in _dag_runs(stack, dag_id)} for dag_id in DAG_IDS}
    triggered = []
    for dag_id in DAG_IDS:
        stack.rest("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        run = stack.rest("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"dag_run_id": "rest_no_date", "logical_date": None})
        assert run["logical_date"] is None
        triggered.append((dag_id, "rest_no_date"))
    states = _wait_run_states(stack, triggered)
    assert set(states.values()) == {"success"}, states

    new_runs = {dag_id: {r["dag_run_id"] for r in _dag_runs(stack, dag_id)} - runs_before[dag_id] for dag_id in DAG_IDS}
    assert new_runs == {dag_id: {"rest_no_date"} for dag_id in DAG_IDS}, "unpausing started another (billed) run"
    starts = _pipeline_starts(stack)[starts_before:]
    print(
        f"\n[e2e] REST triggers without a logical date: {states}; pipeline starts {Counter(r['path'] for r in starts)}"
    )
    assert len(starts) == sum(PIPELINE_STARTS_PER_RUN.values())
    pipeline_ids = [
        json.loads(value) if isinstance(value, str) else value
        for (value,) in stack.query(
            "SELECT value FROM xcom WHERE run_id='rest_no_date' AND key='pipeline_execution_id'"
        )
    ]
    assert len(pipeline_ids) == len(set(pipeline_ids)) == len(starts)
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    assert _run_dates_sent(stack, starts[0]["at"]) == [today, today]  # nightly and the mapped refresh of 1001


def _create_backfill(stack: AirflowStack, body: dict[str, Any]) -> dict[str, Any]:
    """POST a backfill as a user would: on SQLite the api-server answers 503 when the database is busy (seen
    once here, while the scheduler was writing), so look for the backfill and try again if it is not there."""
    for _ in range(5):
        try:
            created: dict[str, Any] = stack.rest("POST", "/api/v2/backfills", body)
            return created
        except urllib.error.HTTPError as err:
            if err.code != 503:
                raise
        time.sleep(2)
        existing = stack.rest("GET", f"/api/v2/backfills?dag_id={body['dag_id']}")["backfills"]
        if existing:
            return dict(existing[0])
    raise AssertionError("the api-server kept answering 503 to POST /api/v2/backfills")


def test_cli_trigger_and_backfill_of_the_nightly_refresh(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    _ensure_connection(stack)
    started_at = time.time()
    stack.airflow("dags", "trigger", "dune_nightly_refresh", "--run-id", "cli_no_date")
    backfill = _create_backfill(
        stack,
        {
            "dag_id": "dune_nightly_refresh",
            "from_date": "2024-06-01T00:00:00Z",
            "to_date": "2024-06-02T23:59:59Z",
            "max_active_runs": 2,
            "reprocess_behavior": "none",
        },
    )
    deadline = time.monotonic() + 60
    while True:
        backfilled = [r for r in _dag_runs(stack, "dune_nightly_refresh") if r["run_type"] == "backfill"]
        if len(backfilled) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    runs = [("dune_nightly_refresh", "cli_no_date")] + [("dune_nightly_refresh", r["dag_run_id"]) for r in backfilled]
    states = _wait_run_states(stack, runs)
    print(f"\n[e2e] CLI trigger and backfill {backfill['id']}: {states}")
    assert set(states.values()) == {"success"}, states
    assert sorted(r["logical_date"][:10] for r in backfilled) == ["2024-06-01", "2024-06-02"]
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    # A backfill gives the DAG a last automated run, so Airflow's CronTriggerTimetable with catchup=False then
    # also schedules the most recent 03:00 (docs/guides/example-dags.rst). Every Airflow run starts one pipeline.
    others = [
        r
        for r in _dag_runs(stack, "dune_nightly_refresh")
        if r["run_type"] == "scheduled" and r["run_after"][:10] == today
    ]
    if others:
        print(f"\n[e2e] the backfill also scheduled {[r['dag_run_id'] for r in others]}")
        _wait_run_states(stack, [("dune_nightly_refresh", r["dag_run_id"]) for r in others])
    expected = ["2024-06-01", "2024-06-02", today] + [today] * len(others)
    assert sorted(_run_dates_sent(stack, started_at)) == sorted(expected)


def test_connection_test_through_the_rest_api_and_the_cli(airflow_stack: AirflowStack) -> None:
    stack = airflow_stack
    _ensure_connection(stack)
    body = {"connection_id": "dune_default", "conn_type": "dune", "host": stack.emulator_url, "password": stack.api_key}
    answer = stack.rest("POST", "/api/v2/connections/test", body)
    assert answer["status"] is True, answer
    assert answer["message"].startswith(f"Connected to Dune at {stack.emulator_url}")
    wrong = stack.rest("POST", "/api/v2/connections/test", {**body, "password": "not-the-key"})
    assert wrong["status"] is False and "HTTP 401" in wrong["message"], wrong
    # Airflow tests under a random connection id: the message names the field, not that id.
    assert "Check the API Key field of this connection" in wrong["message"], wrong
    output = stack.airflow("connections", "test", "dune_default")
    assert "Connection success!" in output, output


def test_browser_task_log_of_a_failed_run(airflow_stack: AirflowStack) -> None:
    """Query 1001 fails with an SQL error: the task log in the UI shows the report table and states the error
    once (the screenshot in docs/operators/pipeline.rst). Before the key grep, so that log is searched too."""
    _require_browser()
    stack = airflow_stack
    assert stack.admin_password is not None
    _ensure_connection(stack)
    error = "line 3:8: Column 'amount_usdd' cannot be resolved"
    query = {"name": "daily_dex_volume", "depends_on": ["dune.demo.result_dex_trades_daily"], "parameters": ["date"]}
    stack.emulator.add_query(1001, **query, duration=2.0, pending=0.5, error=error)
    try:
        stack.rest("PATCH", "/api/v2/dags/dune_nightly_refresh", {"is_paused": False})
        stack.rest(
            "POST", "/api/v2/dags/dune_nightly_refresh/dagRuns", {"dag_run_id": "failed_run", "logical_date": None}
        )
        states = _wait_run_states(stack, [("dune_nightly_refresh", "failed_run")])
    finally:
        stack.emulator.add_query(1001, **query, duration=2.0, pending=0.5)
    assert set(states.values()) == {"failed"}, states
    with browser_page(stack.base_url, ADMIN_USER, stack.admin_password) as page:
        page.goto(f"{stack.base_url}/dags/dune_nightly_refresh/runs/failed_run/tasks/refresh_daily_dex_volume")
        page.get_by_text(re.compile(r"Dune pipeline \w+ failed: node \d+ \(query 1001\)")).first.wait_for()
        log_text = page.locator("body").inner_text()
        # The report table: a header and a row per node, with the failed node's state.
        assert re.search(r"node\s+what\s+state\s+queued\s+ran", log_text), log_text[-3000:]
        assert re.search(r"query 1001\s+failed", log_text), log_text[-3000:]
        # Dune's error once in what the task wrote (the failure message), not in progress lines or events.
        assert log_text.count("Column 'amount_usdd' cannot be resolved") == 1, log_text[-4000:]
        assert "Not retried: this is an SQL error" in log_text, log_text[-3000:]
        screenshot(page, "task-log-failed")


def test_api_key_appears_nowhere(airflow_stack: AirflowStack) -> None:
    found = airflow_stack.find_key_leaks()
    print(f"\n[e2e] key grep after the first hour: searched {found['searched']}")
    assert found["searched"]["log_files"] and found["searched"]["trigger_kwargs"]
    assert not found["files"]
    assert not found["xcom"]
    assert not found["trigger_kwargs"]
