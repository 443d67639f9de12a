"""dune:// assets: URIs, their registration with Airflow, and the events the operators emit."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

import pytest

from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.assets import (
    RefreshedObject,
    create_asset,
    dune_query_asset,
    dune_view_asset,
    emit_asset_events,
    parse_uri,
    query_uri,
    refreshed_by_pipeline,
    sanitize_uri,
    view_uri,
)
from airflow_provider_dune.get_provider_info import get_provider_info
from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.operators.query import DuneExecuteQueryOperator, DuneRefreshMaterializedViewOperator
from airflow_provider_dune.testing.emulator import DuneEmulator
from airflow_provider_dune.utils import task_records
from airflow_provider_dune.version_compat import AIRFLOW_V_3_0_PLUS
from tests.operators.fakes import FakeTI, FakeVariables

if AIRFLOW_V_3_0_PLUS:
    from airflow.sdk import Asset, AssetAlias
    from airflow.sdk.execution_time.context import OutletEventAccessors
else:
    from airflow.datasets import Dataset as Asset
    from airflow.datasets import DatasetAlias as AssetAlias
    from airflow.utils.context import OutletEventAccessors

VIEW = "dune.demo.result_dex_trades_daily"


def test_uris() -> None:
    assert view_uri(" Dune.Team.Result_X ") == "dune://views/dune.team.result_x"
    assert query_uri("1234") == "dune://queries/1234"
    assert parse_uri("dune://views/dune.t.result_x") == ("views", "dune.t.result_x")
    with pytest.raises(DuneConfigurationError):
        query_uri(0)


@pytest.mark.parametrize(
    ("uri", "normalised"),
    [
        ("dune://views/DUNE.Team.Result_X", "dune://views/dune.team.result_x"),
        ("dune://VIEWS/dune.t.v/", "dune://views/dune.t.v"),
        ("dune://queries/0042", "dune://queries/42"),
    ],
)
def test_sanitize_uri_normalises(uri: str, normalised: str) -> None:
    assert sanitize_uri(urlsplit(uri)).geturl() == normalised


@pytest.mark.parametrize(
    ("uri", "says"),
    [
        ("dune://tables/x", "use dune://views/<view full name> or dune://queries/<id>"),
        ("dune://queries/abc", "positive integer"),
        ("dune://views/", "non-empty"),
        ("dune://views/a/b", "not allowed"),
        ("dune://queries/1?x=1", "no query or fragment"),
    ],
)
def test_sanitize_uri_refuses_with_a_reason(uri: str, says: str) -> None:
    with pytest.raises(ValueError, match=r"invalid dune:// asset URI|no query or fragment") as info:
        sanitize_uri(urlsplit(uri))
    assert says in str(info.value)


def test_the_scheme_is_registered_with_airflow() -> None:
    info = get_provider_info()
    for key in ("asset-uris", "dataset-uris"):
        (entry,) = info[key]
        assert entry["schemes"] == ["dune"]
        assert entry["handler"] == "airflow_provider_dune.assets.sanitize_uri"
    # Airflow itself normalises and refuses dune:// URIs through the registered handler.
    assert Asset(uri="dune://views/DUNE.Team.Result_X").uri == "dune://views/dune.team.result_x"
    if AIRFLOW_V_3_0_PLUS:
        with pytest.raises(ValueError, match="dune://views/<view full name>"):
            Asset(uri="dune://tables/x")
    else:  # Airflow 2.11 only warns about URIs its normaliser refuses
        with pytest.warns(UserWarning, match="dune://views/<view full name>"):
            Asset(uri="dune://tables/x")


def test_helpers_build_assets() -> None:
    assert dune_view_asset(VIEW).uri == f"dune://views/{VIEW}"
    assert dune_query_asset(7).uri == "dune://queries/7"
    assert create_asset(view_name=VIEW).uri == f"dune://views/{VIEW}"
    assert create_asset(query_id=7).uri == "dune://queries/7"
    with pytest.raises(ValueError, match="exactly one"):
        create_asset()


def test_only_completed_nodes_count_as_refreshed() -> None:
    details = {
        "pipeline_execution_id": "P",
        "nodes": [
            {
                "kind": "materialized_view_refresh",
                "view_name": "dune.t.a",
                "state": "completed",
                "execution_id": "1",
                "credits": 0.4,
            },
            {"kind": "materialized_view_refresh", "view_name": "dune.t.b", "state": "failed", "execution_id": "2"},
            {"kind": "query_execution", "query_id": 5, "state": "completed", "execution_id": "3"},
        ],
    }
    refreshed = refreshed_by_pipeline(details)
    assert [r.uri for r in refreshed] == ["dune://views/dune.t.a", "dune://queries/5"]
    assert refreshed[0].extra == {"pipeline_execution_id": "P", "execution_id": "1", "credits": 0.4}


# -- events emitted by the operators ------------------------------------------------------------------------


@pytest.fixture
def run(dune_emulator: DuneEmulator, dune_conn_id: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(task_records, "Variable", FakeVariables())

    def _run(task: Any) -> tuple[Any, OutletEventAccessors]:
        events = OutletEventAccessors()
        result = task.execute({"ti": FakeTI(dune_emulator), "outlet_events": events})
        return result, events

    return _run


def _alias_event_list(events: OutletEventAccessors, alias: Any) -> list[Any]:
    accessor = events[alias]
    return list(getattr(accessor, "asset_alias_events", None) or getattr(accessor, "dataset_alias_events", []))


def _alias_events(events: OutletEventAccessors, alias: Any) -> dict[str, dict[str, Any]]:
    found = {}
    for event in _alias_event_list(events, alias):
        if isinstance(event, dict):  # Airflow 2.11
            found[event["dest_dataset_uri"]] = dict(event["extra"])
        else:
            found[event.dest_asset_key.uri] = dict(event.extra)
    return found


def _recorded_events(outlets: list[Any], events: OutletEventAccessors) -> dict[str, list[dict[str, Any]]]:
    """The asset events Airflow records from a task's outlets and accessors, by URI: one per declared asset
    outlet (with its accessor's extra), and one per distinct (asset, extra) added to the declared aliases, linked
    to all of them (``register_asset_changes_in_db`` on Airflow 3, ``_register_dataset_changes`` on 2.11)."""
    recorded: dict[str, list[dict[str, Any]]] = {}
    through_aliases: dict[tuple[str, str], dict[str, Any]] = {}
    for outlet in outlets:
        if isinstance(outlet, AssetAlias):
            for uri, extra in _alias_events(events, outlet).items():
                through_aliases[uri, json.dumps(extra, sort_keys=True)] = extra
        else:
            recorded.setdefault(outlet.uri, []).append(dict(events[outlet].extra))
    for (uri, _), extra in through_aliases.items():
        recorded.setdefault(uri, []).append(extra)
    return recorded


QUERY_URI, VIEW_URI = "dune://queries/1001", f"dune://views/{VIEW}"
ALIAS, OTHER_ALIAS = AssetAlias("dune_refreshed"), AssetAlias("dune_refreshed_too")


@pytest.mark.parametrize(
    ("outlets", "through_alias"),
    [
        ([dune_query_asset(1001), dune_view_asset(VIEW)], set()),
        ([ALIAS], {QUERY_URI, VIEW_URI}),
        ([dune_query_asset(1001), ALIAS], {VIEW_URI}),  # the nightly example
        ([dune_query_asset(1001), dune_view_asset(VIEW), ALIAS], set()),
        ([ALIAS, OTHER_ALIAS], {QUERY_URI, VIEW_URI}),
    ],
    ids=["outlets-only", "alias-only", "outlet-and-alias", "all-declared-and-alias", "two-aliases"],
)
def test_one_event_per_refreshed_object_whatever_is_declared(
    run: Any, outlets: list[Any], through_alias: set[str]
) -> None:
    task = DuneExecutePipelineOperator(
        task_id="p",
        query_id=1001,
        query_parameters={"date": "2024-06-01"},
        poll_interval=0.05,
        deferrable=False,
        outlets=outlets,
    )
    result, events = run(task)
    pipeline_id = result["pipeline_execution_id"]
    nodes = {node["view_name"] or node["query_id"]: node for node in result["nodes"]}
    recorded = _recorded_events(outlets, events)
    assert recorded == {
        uri: [
            {
                "pipeline_execution_id": pipeline_id,
                "execution_id": nodes[key]["execution_id"],
                "credits": nodes[key]["credits"],
            }
        ]
        for uri, key in ((VIEW_URI, VIEW), (QUERY_URI, 1001))
    }
    # A declared outlet is never added again through an alias; the others reach every declared alias.
    for alias in (outlet for outlet in outlets if isinstance(outlet, AssetAlias)):
        assert set(_alias_events(events, alias)) == through_alias


def test_an_object_refreshed_twice_in_one_run_gets_one_event_with_its_last_refresh() -> None:
    refreshed = [
        RefreshedObject(QUERY_URI, {"execution_id": "first"}),
        RefreshedObject(VIEW_URI, {"execution_id": "view"}),
        RefreshedObject(QUERY_URI, {"execution_id": "last", "row_count": None}),
    ]
    events = OutletEventAccessors()
    emit_asset_events({"outlet_events": events}, [ALIAS], refreshed, logging.getLogger(__name__))
    assert _alias_events(events, ALIAS) == {QUERY_URI: {"execution_id": "last"}, VIEW_URI: {"execution_id": "view"}}
    assert len(_alias_event_list(events, ALIAS)) == 2


def test_a_declared_outlet_is_matched_by_its_normalised_uri() -> None:
    declared = Asset(uri="dune://queries/0042") if AIRFLOW_V_3_0_PLUS else Asset(uri="dune://QUERIES/42")
    events = OutletEventAccessors()
    refreshed = [RefreshedObject(query_uri(42), {"execution_id": "e"})]
    emit_asset_events({"outlet_events": events}, [declared, ALIAS], refreshed, logging.getLogger(__name__))
    assert events[declared].extra == {"execution_id": "e"}
    assert _alias_event_list(events, ALIAS) == []


def test_query_and_view_operators_give_their_outlet_the_execution(run: Any) -> None:
    query_asset = dune_query_asset(1003)
    result, events = run(
        DuneExecuteQueryOperator(
            task_id="q",
            query_id=1003,
            query_parameters={"symbol": "ETH"},
            poll_interval=0.05,
            deferrable=False,
            outlets=[query_asset],
        )
    )
    assert events[query_asset].extra == {
        "execution_id": result["execution_id"],
        "row_count": 3,
        "credits": result["total_credits"],
    }
    view_asset = dune_view_asset(VIEW)
    result, events = run(
        DuneRefreshMaterializedViewOperator(
            task_id="v", view_name=VIEW, poll_interval=0.05, deferrable=False, outlets=[view_asset]
        )
    )
    assert events[view_asset].extra == {"execution_id": result["execution_id"], "credits": result["total_credits"]}


def test_an_outlet_the_run_did_not_refresh_is_left_alone_with_a_warning(
    run: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    other = dune_view_asset("dune.demo.not_in_this_pipeline")
    unrelated = Asset(uri="s3://bucket/key")
    _, events = run(
        DuneExecuteQueryOperator(
            task_id="q",
            query_id=1003,
            query_parameters={"symbol": "ETH"},
            poll_interval=0.05,
            deferrable=False,
            outlets=[other, unrelated],
        )
    )
    assert events[other].extra == {} and events[unrelated].extra == {}
    printed = capsys.readouterr()
    assert "was not refreshed by this run" in caplog.text + printed.out + printed.err


def test_no_events_when_the_run_fails(run: Any, dune_emulator: DuneEmulator) -> None:
    alias = AssetAlias("dune_refreshed")
    task = DuneExecutePipelineOperator(
        task_id="p", query_id=1007, poll_interval=0.05, deferrable=False, outlets=[alias]
    )
    events = OutletEventAccessors()
    with pytest.raises(Exception, match="failed"):
        task.execute({"ti": FakeTI(dune_emulator), "outlet_events": events})
    assert _alias_event_list(events, alias) == []
