from __future__ import annotations

import pytest

from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.api.validation import (
    find_dependency_cycle,
    validate_execution_id,
    validate_performance,
    validate_pipeline_nodes,
    validate_query_id,
    validate_query_parameters,
)


def q(node_id: int, query_id: int = 1, deps: list[int] | None = None, **extra: object) -> dict:
    return {"id": node_id, "dependencies": deps or [], "query_execution": {"query_id": query_id, **extra}}


def mv(node_id: int, name: str = "dune.team.result_x", deps: list[int] | None = None) -> dict:
    return {"id": node_id, "dependencies": deps or [], "materialized_view_refresh": {"name": name}}


def test_valid_pipeline_is_normalised() -> None:
    nodes = validate_pipeline_nodes([q(1, 10), mv(2, deps=[1]), q(3, "30", deps=["2"], performance="LARGE")])
    assert nodes == [
        {
            "id": 1,
            "dependencies": [],
            "query_execution": {"query_id": 10, "performance": "medium", "query_parameters": {}},
        },
        {
            "id": 2,
            "dependencies": [1],
            "materialized_view_refresh": {"name": "dune.team.result_x", "performance": "medium"},
        },
        {
            "id": 3,
            "dependencies": [2],
            "query_execution": {"query_id": 30, "performance": "large", "query_parameters": {}},
        },
    ]


def test_accepts_pipeline_wrapper_dict() -> None:
    assert validate_pipeline_nodes({"nodes": [q(1)]})[0]["id"] == 1


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ([], "non-empty list"),
        ("nodes", "non-empty list"),
        ([q(1), q(1)], r"unique; repeated: \[1\]"),
        ([q(1, deps=[7])], r"depends on unknown node id\(s\) \[7\]"),
        ([q(1, deps=[1])], "depends on itself"),
        ([q(1, deps=[2]), q(2, deps=[1])], "cycle: 1 -> 2 -> 1"),
        ([{"id": 1}], "exactly one of 'query_execution' or 'materialized_view_refresh'"),
        (
            [{"id": 1, "query_execution": {"query_id": 1}, "materialized_view_refresh": {"name": "x"}}],
            "exactly one of",
        ),
        ([{"id": 1, "query_exection": {"query_id": 1}}], r"unknown key\(s\) \['query_exection'\]"),
        ([{"dependencies": [], "query_execution": {"query_id": 1}}], "has no 'id'"),
        ([{"id": "one", "query_execution": {"query_id": 1}}], "'id' must be an integer"),
        ([q(1, query_id=0)], "positive integer Dune query id"),
        ([q(1, performance="huge")], "performance must be one of medium, large"),
        ([q(1, query_parameters=["a"])], "query_parameters must be a dict"),
        ([mv(1, name="")], "materialized view name must be a non-empty string"),
        ([q(1, query_idd=3)], r"unknown query_execution key\(s\) \['query_idd'\]"),
        (["x"], "must be a dict in Dune's node shape"),
    ],
)
def test_invalid_pipelines_say_what_to_fix(nodes: object, message: str) -> None:
    with pytest.raises(DuneConfigurationError, match=message):
        validate_pipeline_nodes(nodes)


def test_find_dependency_cycle() -> None:
    assert find_dependency_cycle({1: [], 2: [1], 3: [2]}) is None
    assert find_dependency_cycle({1: [3], 2: [1], 3: [2]}) in ([1, 3, 2, 1], [3, 2, 1, 3], [2, 1, 3, 2])


def test_scalar_validators() -> None:
    assert validate_query_id("42") == 42
    for bad in (True, -1, "abc", None, 1.5):
        with pytest.raises(DuneConfigurationError):
            validate_query_id(bad)
    assert validate_performance(" Medium ") == "medium"
    assert validate_query_parameters(None) == {}
    assert validate_query_parameters('{"date": "2026-01-01"}') == {"date": "2026-01-01"}
    with pytest.raises(DuneConfigurationError, match="JSON-serialisable"):
        validate_query_parameters({"when": object()})
    with pytest.raises(DuneConfigurationError, match="not valid in a Dune id"):
        validate_execution_id("../../v1/usage")
