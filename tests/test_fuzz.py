"""Bounded fuzzing: generated arguments for every operator and sensor, hostile bodies for every parser.

Only the provider's own errors may escape (``DuneConfigurationError`` for arguments, ``DuneResponseError`` for
bodies), each with a message that is more than a bare type name. Runs are reproducible: the seed is fixed
(``DUNE_FUZZ_SEED`` overrides it) and a failure prints it with the input that broke.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_dune.api import endpoints, models
from airflow_provider_dune.api.errors import DuneConfigurationError, DuneError, DuneResponseError
from airflow_provider_dune.api.responses import decode_response
from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator
from airflow_provider_dune.operators.query import DuneExecuteQueryOperator, DuneRefreshMaterializedViewOperator
from airflow_provider_dune.sensors.execution import DuneExecutionSensor
from airflow_provider_dune.sensors.pipeline import DunePipelineSensor

SEED = int(os.environ.get("DUNE_FUZZ_SEED") or 20261125)
CASES = 300

SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    7,
    2**63,
    0.0,
    -0.0,
    1e-9,
    0.5,
    30.0,
    1e308,
    math.nan,
    math.inf,
    -math.inf,
    "",
    " ",
    "0",
    "10",
    "1001",
    "-5",
    "\u00b2",
    "\uff11",
    "abc",
    "a/b",
    "../x",
    "x?y#z",
    "medium",
    "LARGE",
    "bogus",
    "{{ ds }}",
    "{{ ti.xcom_pull(task_ids='t') }}",
    "dune.team.result_x",
    "s3://bucket/out.csv",
    "/tmp/out.jsonl",
    "out.parquet",
    "x" * 5000,
    "[]",
    '[{"id": 1, "query_execution": {"query_id": 1}}]',
    "{not json",
    b"bytes",
    timedelta(0),
    timedelta(seconds=-5),
    timedelta(minutes=5),
]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.12:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 3 and roll < 0.24:
        keys = ["id", "query_id", "query_execution", "materialized_view_refresh", "dependencies", "name", "x", ""]
        return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return rng.choice(SCALARS)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "..."


def _explains(error: BaseException) -> bool:
    text = str(error)
    return len(text) > 20 and " object at 0x" not in text


Factory = Callable[..., Any]
TARGETS: dict[str, tuple[Factory, tuple[str, ...], dict[str, Any]]] = {
    "pipeline": (
        DuneExecutePipelineOperator,
        ("query_id", "nodes", "performance", "query_parameters", "poll_interval", "timeout"),
        {"query_id": 1001},
    ),
    "query": (
        DuneExecuteQueryOperator,
        (
            "query_id",
            "query_parameters",
            "performance",
            "output_path",
            "output_format",
            "page_size",
            "max_xcom_rows",
            "poll_interval",
            "timeout",
        ),
        {"query_id": 1001},
    ),
    "view": (
        DuneRefreshMaterializedViewOperator,
        ("view_name", "performance", "poll_interval", "timeout"),
        {"view_name": "dune.team.result_x"},
    ),
    "pipeline_sensor": (
        DunePipelineSensor,
        ("pipeline_execution_id", "poke_interval", "timeout"),
        {"pipeline_execution_id": "01ABC"},
    ),
    "execution_sensor": (
        DuneExecutionSensor,
        ("execution_id", "poke_interval", "timeout"),
        {"execution_id": "01ABC"},
    ),
}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_constructors_accept_or_explain_every_generated_argument(target: str) -> None:
    factory, params, required = TARGETS[target]
    rng = random.Random(f"{SEED}-{target}")
    accepted = refused = 0
    unclear: list[str] = []
    for case in range(CASES):
        kwargs = dict(required)
        for name in rng.sample(params, rng.randint(1, min(3, len(params)))):
            kwargs[name] = random_value(rng)
        try:
            task = factory(task_id=f"fuzz_{case}", **kwargs)
        except DuneConfigurationError as err:
            refused += 1
            unclear += [] if _explains(err) else [f"{_short(kwargs)}: {err!r}"]
            continue
        except Exception as err:
            pytest.fail(f"seed {SEED}, {target} {_short(kwargs)}: {type(err).__name__} escaped: {err}")
        accepted += 1
        build = getattr(task, "build_request", None)
        if build is not None:  # what execute() checks once templates rendered (the values as they are here)
            try:
                build(allow_templates=False)
            except DuneConfigurationError as err:
                unclear += [] if _explains(err) else [f"{_short(kwargs)} at execute: {err!r}"]
            except Exception as err:
                pytest.fail(f"seed {SEED}, {target} {_short(kwargs)} at execute: {type(err).__name__} escaped: {err}")
    assert not unclear, f"seed {SEED}, {target}: unclear messages {unclear[:5]}"
    assert accepted and refused, f"the generator should produce both valid and invalid {target} arguments"


#: Every public ``parse_*`` of ``api/models.py``: all are fuzzed but those in NOT_FUZZED, so a new one is too.
PUBLIC_PARSERS: dict[str, Callable[..., Any]] = {
    name: function
    for name, function in inspect.getmembers(models, inspect.isfunction)
    if name.startswith("parse_") and function.__module__ == models.__name__
}
#: Public parsers that are not fuzzed with bodies, and why.
NOT_FUZZED: dict[str, str] = {
    "parse_timestamp": "reads a time string that the body parsers took out of a body (fuzzed through them)",
}
#: The arguments a parser takes after the body.
PARSER_ARGS: dict[str, tuple[Any, ...]] = {
    "parse_pipeline_status": ("P1",),
    "parse_query_id": ("create query",),
    "parse_materialized_view_deleted": ("dune.team.result_x",),
}


def _with_args(parse: Callable[..., Any], args: tuple[Any, ...]) -> Callable[[Any], Any]:
    return lambda body: parse(body, *args)


PARSERS: dict[str, Callable[[Any], Any]] = {
    name: _with_args(parse, PARSER_ARGS.get(name, ()))
    for name, parse in PUBLIC_PARSERS.items()
    if name not in NOT_FUZZED
}


def test_every_parser_is_fuzzed_or_excluded_with_a_reason() -> None:
    assert set(NOT_FUZZED) <= set(PUBLIC_PARSERS), f"excluded but gone: {set(NOT_FUZZED) - set(PUBLIC_PARSERS)}"
    assert set(PARSER_ARGS) <= set(PARSERS), f"arguments for parsers not fuzzed: {set(PARSER_ARGS) - set(PARSERS)}"
    assert all(reason.strip() for reason in NOT_FUZZED.values())
    assert {"parse_pipeline_status", "parse_execution_status", "parse_result_page", "parse_usage"} <= set(PARSERS)


#: Field names the parsers read, so generated bodies reach past the first ``isinstance`` check.
FIELDS = [
    "status",
    "state",
    "error",
    "node_executions",
    "id",
    "query_execution_status",
    "materialized_view_refresh_status",
    "execution_id",
    "pipeline_execution_id",
    "query_id",
    "result",
    "rows",
    "metadata",
    "result_metadata",
    "next_offset",
    "next_uri",
    "is_execution_finished",
    "queue_position",
    "name",
    "last_execution_ids",
    "billingPeriods",
    "creditsUsed",
    "column_names",
    "total_row_count",
    "pipeline",
    "nodes",
    "dependencies",
    "query_execution",
    "materialized_view_refresh",
    "query_parameters",
    "performance",
    "rows_written",
    "success",
    "message",
]


def hostile_body(rng: random.Random, depth: int = 0) -> Any:
    if depth < 4 and rng.random() < 0.6:
        return {rng.choice(FIELDS): hostile_body(rng, depth + 1) for _ in range(rng.randint(0, 6))}
    if depth < 4 and rng.random() < 0.3:
        return [hostile_body(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return random_value(rng, depth=3)


@pytest.mark.parametrize("parser", sorted(PARSERS))
def test_parsers_only_raise_response_errors_on_hostile_bodies(parser: str) -> None:
    parse = PARSERS[parser]
    rng = random.Random(f"{SEED}-{parser}")
    unclear: list[str] = []
    for _ in range(CASES * 3):
        body = hostile_body(rng)
        try:
            parsed = parse(body)
        except DuneResponseError as err:
            unclear += [] if _explains(err) else [f"{_short(body)}: {err!r}"]
            continue
        except Exception as err:
            pytest.fail(f"seed {SEED}, {parser} {_short(body)}: {type(err).__name__} escaped: {err}")
        to_dict = getattr(parsed, "to_dict", None)
        if to_dict is not None:
            json.dumps(to_dict())  # what reaches XCom and trigger events stays serialisable
        for method in ("progress_summary", "failure_message"):
            if hasattr(parsed, method):
                getattr(parsed, method)()
        if hasattr(parsed, "outcome"):
            assert parsed.outcome.value in ("running", "success", "failed", "cancelled", "unknown")
    assert not unclear, f"seed {SEED}, {parser}: unclear messages {unclear[:5]}"


def test_decoding_random_bytes_raises_only_provider_errors() -> None:
    rng = random.Random(f"{SEED}-bytes")
    request = endpoints.get_pipeline_status("P1")
    samples = [b"", b"[" * 50_000, b"\xff\xfe", b"null", b'{"error": {"message": 5}}', b"<html>502</html>"]
    samples += [rng.randbytes(rng.randint(0, 300)) for _ in range(CASES)]
    samples += [json.dumps(hostile_body(rng), default=str).encode() for _ in range(CASES)]
    unclear: list[str] = []
    for content in samples:
        for status in (200, 204, 301, 400, 401, 404, 418, 429, 500, 503):
            try:
                decode_response(request, status, content, {"Retry-After": "x"})
            except DuneError as err:
                unclear += [] if _explains(err) else [f"HTTP {status} {content[:80]!r}: {err!r}"]
            except Exception as err:
                pytest.fail(f"seed {SEED}: HTTP {status} {content[:80]!r}: {type(err).__name__} escaped: {err}")
    assert not unclear, f"seed {SEED}: unclear messages {unclear[:5]}"
