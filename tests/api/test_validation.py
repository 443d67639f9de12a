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
        ("nodes", "not valid JSON"),
        ("[]", "non-empty list"),
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


# -- parse-time gaps: each would have reached Dune, or failed with a raw Python error -------------------------


def test_a_json_string_of_nodes_is_accepted_as_the_type_hint_promises() -> None:
    import json

    assert validate_pipeline_nodes(json.dumps([q(1, 10), mv(2, deps=[1])]))[1]["dependencies"] == [1]


def test_nodes_without_their_own_performance_get_the_operators() -> None:
    nodes = validate_pipeline_nodes([q(1), q(2, performance="medium")], default_performance="large")
    assert [n["query_execution"]["performance"] for n in nodes] == ["large", "medium"]
    with pytest.raises(DuneConfigurationError, match="performance must be one of medium, large"):
        validate_pipeline_nodes([q(1)], default_performance="bogus")


@pytest.mark.parametrize("value", ["\u00b2", "\uff11\uff12", "1.5", "0x10"])  # superscript 2, full-width 12
def test_non_ascii_or_non_decimal_query_ids_are_configuration_errors(value: str) -> None:
    with pytest.raises(DuneConfigurationError, match="positive integer Dune query id"):
        validate_query_id(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [1.0, float("-inf")]])
def test_non_finite_parameter_values_fail_before_any_request(value: object) -> None:
    with pytest.raises(DuneConfigurationError, match="finite numbers"):
        validate_query_parameters({"x": value})


@pytest.mark.slow
def test_a_long_dependency_chain_is_validated_without_recursion() -> None:
    chain = [q(1)] + [q(i, deps=[i - 1]) for i in range(2, 3001)]
    assert len(validate_pipeline_nodes(chain)) == 3000
    looped = [q(1, deps=[3000]), *chain[1:]]
    with pytest.raises(DuneConfigurationError, match="dependency cycle: 1 -> 3000 -> "):
        validate_pipeline_nodes(looped)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "above zero"),
        (-1, "above zero"),
        (float("nan"), "finite"),
        (float("inf"), "finite"),
        (1e-6, "at least 1 s"),
        ("10", "number of seconds"),
        (True, "number of seconds"),
    ],
)
def test_intervals_must_be_finite_and_not_below_the_floor(value: object, message: str) -> None:
    from airflow_provider_dune.api.validation import validate_seconds

    with pytest.raises(DuneConfigurationError, match=message):
        validate_seconds(value, "poll_interval", minimum=1.0)


def test_seconds_accept_timedeltas_and_none_where_allowed() -> None:
    from datetime import timedelta

    from airflow_provider_dune.api.validation import (
        validate_optional_seconds,
        validate_positive_int,
        validate_seconds,
    )

    assert validate_seconds(timedelta(minutes=2), "timeout") == 120.0
    assert validate_optional_seconds(None, "timeout") is None
    assert validate_positive_int("10", "page_size") == 10
    with pytest.raises(DuneConfigurationError, match="page_size must be a whole number"):
        validate_positive_int(0, "page_size")
