"""Fixtures for the Dune API emulator's own tests.

Every emulator made by these fixtures has each response it sent checked against Dune's OpenAPI spec when the
test ends (see :class:`SpecChecker`), so all scenarios double as spec-conformance checks.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import requests
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from airflow_provider_dune.testing._profiles import PROFILE_ENV
from airflow_provider_dune.testing._spec import load_spec
from airflow_provider_dune.testing.emulator import ENDPOINTS, DuneEmulator, RecordedRequest
from airflow_provider_dune.testing.pytest_plugin import dune_emulator, dune_emulator_session  # noqa: F401

WRITE_KEY = "test-key"
READ_KEY = "read-key"

ERROR_BODY = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "minLength": 1}},
    "additionalProperties": False,
}


class FakeClock:
    """A manual monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Api:
    """Calls one emulator over real HTTP with a key (``requests`` session, so keep-alive is exercised)."""

    def __init__(self, emulator: DuneEmulator, key: str | None = WRITE_KEY) -> None:
        self.url = emulator.url
        self.session = requests.Session()
        if key is not None:
            self.session.headers["X-Dune-Api-Key"] = key

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        return self.session.get(self.url + path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 5)
        return self.session.post(self.url + path, json=json, **kwargs)

    def close(self) -> None:
        self.session.close()

    # conveniences
    def run_query_pipeline(self, query_id: int, **body: Any) -> str:
        response = self.post(f"/v1/query/{query_id}/pipeline/execute", json={"performance": "medium", **body})
        assert response.status_code == 200, response.text
        pipeline_id: str = response.json()["pipeline_execution_id"]
        return pipeline_id

    def pipeline(self, pipeline_id: str) -> dict[str, Any]:
        response = self.get(f"/v1/pipelines/executions/{pipeline_id}/status")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def execution(self, execution_id: str) -> dict[str, Any]:
        response = self.get(f"/v1/execution/{execution_id}/status")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def node_status(node: dict[str, Any]) -> dict[str, Any]:
    """The ``*_status`` object of a pipeline status node."""
    status: dict[str, Any] = node.get("query_execution_status") or node["materialized_view_refresh_status"]
    return status


def _closed(schema: Any) -> Any:
    """Copy of ``schema`` where every object schema that declares properties rejects undeclared keys."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _closed(value) for key, value in schema.items()}
    if out.get("properties") and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


class SpecChecker:
    """Validates emulator responses against the response schemas of Dune's OpenAPI spec.

    Two deliberate adjustments:

    * ``models.Row`` declares ``additionalProperties: {type: object}``, i.e. every column value would have to be
      a JSON object; real rows hold numbers and strings (Dune's own example responses do). That is a defect of
      the spec, so for rows only the constraint is relaxed to "any JSON value".
    * Stricter than the spec: object schemas that declare properties reject undeclared keys, so a misspelt or
      invented field cannot pass.

    Statuses the spec does not declare for an operation (e.g. 429, 402 on pipeline endpoints, injected 503s)
    must still be Dune's ``{"error": "<message>"}`` shape; they are collected in :attr:`undeclared`.
    """

    def __init__(self) -> None:
        spec = copy.deepcopy(load_spec())
        schemas = spec["components"]["schemas"]
        schemas = {name: _closed(schema) for name, schema in schemas.items()}
        schemas["models.Row"] = {"type": "object"}  # spec defect, see the class docstring
        spec["components"]["schemas"] = schemas
        self.spec = spec
        self.registry = Registry().with_resource("urn:spec", Resource.from_contents(spec, default_specification=DRAFT7))
        self.seen: set[tuple[str, int]] = set()
        self.undeclared: set[tuple[str, int]] = set()

    def response_schema(self, endpoint: str, status: int) -> dict[str, Any] | None:
        operation = ENDPOINTS[endpoint]
        response = self.spec["paths"][operation.path][operation.method.lower()]["responses"].get(str(status))
        if response is None:
            return None
        schema: dict[str, Any] = response["content"]["application/json"]["schema"]
        return {"$ref": "urn:spec" + schema["$ref"]} if "$ref" in schema else schema  # inline: {"type": "object"}

    def validate(self, endpoint: str, status: int, body: Any) -> None:
        """Raise ``jsonschema.ValidationError`` when ``body`` does not conform."""
        if status >= 400:
            jsonschema.validate(body, ERROR_BODY)
        if endpoint == "unknown":
            return
        schema = self.response_schema(endpoint, status)
        if schema is None:
            assert status >= 400, f"{endpoint} answered {status}, which the spec does not declare"
            self.undeclared.add((endpoint, status))
            return
        jsonschema.Draft7Validator(schema, registry=self.registry).validate(body)

    def check(self, request: RecordedRequest) -> None:
        """Validate one recorded exchange (dropped connections and deliberately hostile answers are skipped)."""
        if request.status is None or request.fault in ("malformed", "oversized", "echo_key", "redirect"):
            return
        body = json.loads(request.response_body)
        self.validate(request.endpoint, request.status, body)
        self.seen.add((request.endpoint, request.status))

    def check_all(self, emulator: DuneEmulator) -> None:
        for request in emulator.requests:
            try:
                self.check(request)
            except jsonschema.ValidationError as exc:
                pytest.fail(
                    f"{request.method} {request.path} -> {request.status} does not match Dune's spec: {exc.message}\n"
                    f"body: {request.response_body[:500]!r}"
                )


@pytest.fixture(autouse=True)
def strict_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator's own behaviour is checked against the spec's ideal shapes (the realistic profile has its
    own tests in ``test_emulator_profiles.py``)."""
    monkeypatch.setenv(PROFILE_ENV, "strict")


@pytest.fixture(scope="session")
def spec_checker() -> SpecChecker:
    return SpecChecker()


@pytest.fixture
def emu(dune_emulator: DuneEmulator, spec_checker: SpecChecker) -> Iterator[DuneEmulator]:  # noqa: F811
    """The plugin's emulator (demo catalog, short durations); its responses are spec-checked afterwards."""
    yield dune_emulator
    spec_checker.check_all(dune_emulator)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clocked(clock: FakeClock, spec_checker: SpecChecker) -> Iterator[DuneEmulator]:
    """An empty emulator driven by :class:`FakeClock` (``clock.advance``), for deterministic timelines."""
    with DuneEmulator(api_keys={WRITE_KEY: "write", READ_KEY: "read"}, clock=clock) as emulator:
        yield emulator
        spec_checker.check_all(emulator)


@pytest.fixture
def api(emu: DuneEmulator) -> Iterator[Api]:
    client = Api(emu)
    yield client
    client.close()


@pytest.fixture
def capi(clocked: DuneEmulator) -> Iterator[Api]:
    client = Api(clocked)
    yield client
    client.close()
