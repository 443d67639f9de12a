"""Response profiles: which of the shapes Dune has been seen to send the emulator answers with.

``strict`` answers with the spec's complete, ideal field set, always the same. ``realistic`` (the default)
draws each answer, seeded and so reproducible, from the shapes listed in the Dune API reference's
``REAL_SHAPES.md``: fields left out rather than null, extra fields the spec does not list, zero timestamps,
``cancelled_at`` on a completed execution, ``QUERY_STATE_CANCELED`` spelled with one L, SQL errors with and
without line/column, result metadata flat inside ``result``, a pipeline node carrying both status objects, a
partial-result refusal as HTTP 400 as well as a 200 with a failed state, and the datapoint-cap refusal under
more than one status code (Dune's code for it is not documented).
"""

from __future__ import annotations

import os
import random
import secrets
import threading
from collections.abc import Callable
from typing import Any

PROFILES: tuple[str, ...] = ("realistic", "strict")
DEFAULT_PROFILE = "realistic"
#: Environment variables that choose the profile and seed of every emulator that is not told otherwise.
PROFILE_ENV = "DUNE_EMULATOR_PROFILE"
SEED_ENV = "DUNE_EMULATOR_SEED"

#: What Dune sends for "not set" instead of leaving a timestamp out.
ZERO_TIMESTAMP = "1970-01-01T00:00:00Z"
#: Dune's words when a truncated result is read without ``allow_partial_results=true`` (Dune's docs).
PARTIAL_RESULT_MESSAGE = "Partial Result, please request with 'allow_partial_results=true'"
#: Dune's words when a results request would return more datapoints than the account allows per request.
DATAPOINT_LIMIT_MESSAGE = (
    "This api request would exceed your configured limits per request. Please use pagination "
    "(limit/offset) or set ignore_max_datapoints_per_request=true"
)

_METADATA_OPTIONAL = ("row_count", "pending_time_millis")
_STATUS_EXTRAS = {"max_inflight_interactive_executions": 3, "max_inflight_interactive_reached": 0}
_FINISHED_STATES = frozenset(
    {
        "QUERY_STATE_COMPLETED",
        "QUERY_STATE_COMPLETED_PARTIAL",
        "QUERY_STATE_FAILED",
        "QUERY_STATE_CANCELLED",
        "QUERY_STATE_EXPIRED",
    }
)


#: Every shape the realistic profile draws, by name (``ResponseProfile(always=...)`` forces some on).
SHAPES: tuple[str, ...] = (
    "no_finished_flag",  # is_execution_finished left out (dune-client PR #17)
    "large_queue_position",  # pending with a queue position in the tens of thousands (PR #17)
    "zero_expires_at",  # "1970-01-01T00:00:00Z" on a running execution (docs, execution-status page)
    "cancelled_at_when_completed",  # a completed status carrying cancelled_at (older docs example)
    "canceled_one_l",  # QUERY_STATE_CANCELED (docs state list)
    "extra_status_fields",  # max_inflight_interactive_* (docs example)
    "error_without_location",  # a SQL error without metadata line/column (dune-client #89 has both)
    "metadata_fields_absent",  # no row_count / pending_time_millis (dune-client issue #22)
    "flat_result_metadata",  # metadata flat inside result (older latest-results docs page)
    "both_node_status_objects",  # a node carrying an empty sibling status object (docs example, inference)
    "extra_pipeline_fields",  # unknown fields on a pipeline status and its nodes
    "extra_view_fields",  # unknown fields on a materialized view
    "partial_refusal_as_http_400",  # the partial-result refusal as HTTP 400 (docs) instead of a failed state
)


def new_profile_seed() -> int:
    """A fresh seed for a realistic profile (print it: it replays the same shapes)."""
    return secrets.randbelow(1_000_000_000)


def profile_from_environment() -> tuple[str, int | None]:
    """The profile and seed set by ``DUNE_EMULATOR_PROFILE`` / ``DUNE_EMULATOR_SEED`` (defaults otherwise)."""
    name = os.environ.get(PROFILE_ENV, "").strip() or DEFAULT_PROFILE
    raw_seed = os.environ.get(SEED_ENV, "").strip()
    if not raw_seed:
        return name, None
    try:
        return name, int(raw_seed)
    except ValueError:
        raise ValueError(f"{SEED_ENV} must be an integer, got {raw_seed!r}") from None


class ResponseProfile:
    """Shapes the emulator's answers; one per emulator, safe to share between its request threads.

    :param name: ``realistic`` or ``strict``; ``None`` reads ``DUNE_EMULATOR_PROFILE`` (default realistic).
    :param seed: seed of the realistic draws; ``None`` reads ``DUNE_EMULATOR_SEED``, else picks one (see
        :attr:`seed`).
    :param always: names from :data:`SHAPES` to send whenever they apply instead of drawing them.
    """

    def __init__(self, name: str | None = None, seed: int | None = None, always: tuple[str, ...] = ()) -> None:
        env_name, env_seed = profile_from_environment()
        name = env_name if name is None else name
        seed = env_seed if seed is None else seed
        if name not in PROFILES:
            raise ValueError(f"unknown response profile {name!r}: use one of {', '.join(PROFILES)}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"the profile seed must be an integer, got {seed!r}")
        unknown = sorted(set(always) - set(SHAPES))
        if unknown:
            raise ValueError(f"unknown response shapes {', '.join(unknown)}: use {', '.join(SHAPES)}")
        self.name = name
        self.seed = new_profile_seed() if seed is None else seed
        #: Shapes sent every time they apply (tests that need one shape for sure).
        self.always = frozenset(always)
        self._lock = threading.Lock()
        self._drawn: dict[str, int] = {}

    @property
    def realistic(self) -> bool:
        return self.name == "realistic"

    def describe(self) -> str:
        return f"profile {self.name}, seed {self.seed}" if self.realistic else "profile strict"

    def reset(self) -> None:
        """Start the draws again from the seed (the emulator's reset calls this)."""
        with self._lock:
            self._drawn.clear()

    def _draw(self, endpoint: str) -> _Draw:
        # One stream per endpoint and answer number: an answer's shape does not depend on other endpoints' traffic.
        with self._lock:
            index = self._drawn.get(endpoint, 0)
            self._drawn[endpoint] = index + 1
        return _Draw(random.Random(f"{self.seed}:{endpoint}:{index}"), self.always)

    def answer(self, endpoint: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """The status and body to send for a successful ``endpoint`` call whose ideal body is ``payload``."""
        if not self.realistic:
            return 200, payload
        draw = self._draw(endpoint)
        results = endpoint in ("get_execution_results", "get_query_results")
        if results and _is_partial_refusal(payload) and draw("partial_refusal_as_http_400", 0.5):
            return 400, {"error": PARTIAL_RESULT_MESSAGE}
        shaper = _SHAPERS.get(endpoint)
        if shaper is not None:
            shaper(payload, draw)
        return 200, payload

    def error_status(self, endpoint: str, status: int, message: str) -> int:
        """The status code of an error answer; the datapoint refusal's is not documented, so it varies."""
        if self.realistic and message == DATAPOINT_LIMIT_MESSAGE:
            return self._draw(endpoint + ":error").rng.choice((400, 402, 403))
        return status


def _is_partial_refusal(payload: dict[str, Any]) -> bool:
    error = payload.get("error")
    return isinstance(error, dict) and error.get("message") == PARTIAL_RESULT_MESSAGE


class _Draw:
    """Decides, for one answer, whether each shape is sent: forced ones always, the others by chance."""

    def __init__(self, rng: random.Random, always: frozenset[str]) -> None:
        self.rng = rng
        self.always = always

    def __call__(self, shape: str, probability: float) -> bool:
        drawn = self.rng.random() < probability  # drawn even when forced, so the other draws stay the same
        return shape in self.always or drawn


def _status_fields(body: dict[str, Any], draw: _Draw) -> None:
    """Execution status fields, as in the status and results answers."""
    state = body.get("state")
    if "is_execution_finished" in body and draw("no_finished_flag", 0.5):
        del body["is_execution_finished"]
    if state == "QUERY_STATE_PENDING" and draw("large_queue_position", 0.5):
        body["queue_position"] = draw.rng.randint(1_000, 60_000)
    if state not in _FINISHED_STATES and "expires_at" not in body and draw("zero_expires_at", 0.5):
        body["expires_at"] = ZERO_TIMESTAMP
    if state == "QUERY_STATE_COMPLETED" and "cancelled_at" not in body and draw("cancelled_at_when_completed", 0.3):
        body["cancelled_at"] = body.get("execution_ended_at") or ZERO_TIMESTAMP
    if state == "QUERY_STATE_CANCELLED" and draw("canceled_one_l", 0.5):
        body["state"] = "QUERY_STATE_CANCELED"
    if draw("extra_status_fields", 0.5):
        body.update(_STATUS_EXTRAS)
    error = body.get("error")
    if isinstance(error, dict) and "metadata" in error and draw("error_without_location", 0.5):
        del error["metadata"]


def _drop_metadata_fields(metadata: Any, draw: _Draw) -> None:
    if isinstance(metadata, dict):
        for key in _METADATA_OPTIONAL:
            if key in metadata and draw("metadata_fields_absent", 0.5):
                del metadata[key]


def _execution_status(body: dict[str, Any], draw: _Draw) -> None:
    _status_fields(body, draw)
    _drop_metadata_fields(body.get("result_metadata"), draw)


def _results(body: dict[str, Any], draw: _Draw) -> None:
    _status_fields(body, draw)
    result = body.get("result")
    if not isinstance(result, dict):
        return
    metadata = result.get("metadata")
    _drop_metadata_fields(metadata, draw)
    if isinstance(metadata, dict) and draw("flat_result_metadata", 0.3):
        del result["metadata"]
        result.update(metadata)


def _pipeline_status(body: dict[str, Any], draw: _Draw) -> None:
    for node in body.get("node_executions") or ():
        if not isinstance(node, dict):
            continue
        has_query = "query_execution_status" in node
        sibling = "materialized_view_refresh_status" if has_query else "query_execution_status"
        if draw("both_node_status_objects", 0.3):
            node[sibling] = {}
        if draw("extra_pipeline_fields", 0.2):
            node["attempt"] = 1
    if draw("extra_pipeline_fields", 0.3):
        body["pipeline_execution_started_at"] = ZERO_TIMESTAMP


def _materialized_view(body: dict[str, Any], draw: _Draw) -> None:
    if draw("extra_view_fields", 0.5):
        body.update(cron_expression=None, performance="medium")


_SHAPERS: dict[str, Callable[[dict[str, Any], _Draw], None]] = {
    "get_execution_status": _execution_status,
    "get_execution_results": _results,
    "get_query_results": _results,
    "get_pipeline_status": _pipeline_status,
    "get_materialized_view": _materialized_view,
}
