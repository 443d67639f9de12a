"""The emulator guide's control commands (docs/guides/emulator.rst, "Making it misbehave from outside") run
against a live ``dune-emulator`` process, as a reader would copy them, and each has the effect the guide says.

Every block named ``emulator-control-<scenario>-curl`` / ``-python`` is run once; its address
``127.0.0.1:8765`` becomes the test emulator's. The emulator runs the demo catalog with its ``pending`` and
``duration`` seconds x 0.01, so a run ends within a few hundredths of a second unless a command made it slow.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_dune.testing.emulator import DEFAULT_SEED_PATH
from airflow_provider_dune.testing.process import EmulatorProcess, emulator_process

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guides" / "emulator.rst"
DOCUMENTED_ADDRESS = "127.0.0.1:8765"
API_KEY = "emulator-key"
SCENARIOS = ("fail", "slow", "errors", "lost-answer", "reset")
_BLOCK = re.compile(
    r"^\.\. code-block:: (?P<language>\w+)\n   :name: emulator-control-(?P<name>[\w-]+)\n\n"
    r"(?P<body>(?:(?:   .*)?\n)+)",
    re.MULTILINE,
)


def guide_blocks() -> dict[str, str]:
    """The guide's named control blocks: ``<scenario>-curl`` / ``<scenario>-python`` (and ``client-python``)."""
    blocks: dict[str, str] = {}
    for match in _BLOCK.finditer(GUIDE.read_text()):
        name = match["name"]
        assert name not in blocks, f"two blocks named emulator-control-{name} in {GUIDE.name}"
        assert name.endswith(f"-{'curl' if match['language'] == 'bash' else match['language']}"), name
        blocks[name] = textwrap.dedent(match["body"]).strip() + "\n"
    return blocks


BLOCKS = guide_blocks()


def test_the_guide_has_a_curl_and_a_python_block_for_each_scenario() -> None:
    expected = {"client-python"} | {f"{scenario}-{kind}" for scenario in SCENARIOS for kind in ("curl", "python")}
    assert set(BLOCKS) == expected
    for name, body in BLOCKS.items():  # the other Python blocks use the client block's ``emulator``
        if name.endswith("-curl") or name == "client-python":
            assert DOCUMENTED_ADDRESS in body, f"{name} does not talk to `make emulator` on {DOCUMENTED_ADDRESS}"


class Dune:
    """The emulator's Dune API, as a client sees it, and its control client."""

    def __init__(self, process: EmulatorProcess) -> None:
        self.process = process
        self.control = process.client
        self.session = requests.Session()
        self.session.headers["X-Dune-Api-Key"] = API_KEY

    @property
    def address(self) -> str:
        return self.control.base_url.removeprefix("http://")

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        return self.session.request(method, f"{self.process.url}{path}", json=body, timeout=10)

    def execute_1001(self) -> str:
        answer = self.call("POST", "/v1/query/1001/execute", {"query_parameters": {"date": "2024-06-01"}})
        assert answer.status_code == 200, answer.text
        return str(answer.json()["execution_id"])

    def status(self, execution_id: str) -> dict[str, Any]:
        answer = self.call("GET", f"/v1/execution/{execution_id}/status")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def final_status(self, execution_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while True:
            status = self.status(execution_id)
            if status["is_execution_finished"] or time.monotonic() > deadline:
                return status
            time.sleep(0.1)

    def start_pipeline(self, query_id: int) -> requests.Response:
        return self.call("POST", f"/v1/query/{query_id}/pipeline/execute", {"performance": "medium"})


@pytest.fixture(scope="module")
def live_emulator() -> Iterator[EmulatorProcess]:
    with emulator_process(API_KEY, extra_args=["--time-scale", "0.01", "--profile", "strict"]) as process:
        yield process


@pytest.fixture
def dune(live_emulator: EmulatorProcess) -> Iterator[Dune]:
    """The live emulator with nothing recorded or queued and the demo catalog at time scale 0.01."""
    client = live_emulator.client
    client.reset()
    client.load_seed(json.loads(DEFAULT_SEED_PATH.read_text()), time_scale=0.01)
    dune = Dune(live_emulator)
    yield dune
    dune.session.close()


def run_block(dune: Dune, name: str) -> None:
    """Run one guide block as a reader would, against the test emulator."""
    code = BLOCKS[name].replace(DOCUMENTED_ADDRESS, dune.address)
    if name.endswith("-curl"):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, f"{name}:\n{code}\n{result.stdout}{result.stderr}"
        return
    namespace: dict[str, Any] = {}
    exec(BLOCKS["client-python"].replace(DOCUMENTED_ADDRESS, dune.address), namespace)
    exec(code, namespace)


needs_curl = pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl is not installed: the guide's commands use it"
)
KINDS = [pytest.param("curl", marks=needs_curl), "python"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_query_fails_with_an_sql_error(dune: Dune, kind: str) -> None:
    run_block(dune, f"fail-{kind}")
    status = dune.final_status(dune.execute_1001())
    assert status["state"] == "QUERY_STATE_FAILED", status
    assert "line 3:8: Column amount_usdd cannot be resolved" in json.dumps(status)
    pipeline = dune.start_pipeline(1001)  # the pipeline still runs the view first: the lineage was kept
    assert pipeline.status_code == 200, pipeline.text
    nodes = dune.call("GET", "/v1/query/1001/pipeline").json()["pipeline"]["nodes"]
    assert len(nodes) == 2, nodes


@pytest.mark.parametrize("kind", KINDS)
def test_runs_are_slow(dune: Dune, kind: str) -> None:
    assert dune.final_status(dune.execute_1001())["state"] == "QUERY_STATE_COMPLETED"  # quickly, before
    run_block(dune, f"slow-{kind}")
    execution_id = dune.execute_1001()
    assert dune.status(execution_id)["state"] == "QUERY_STATE_PENDING"  # for 60 s now


@pytest.mark.parametrize("kind", KINDS)
def test_the_next_requests_answer_429_then_503(dune: Dune, kind: str) -> None:
    run_block(dune, f"errors-{kind}")
    for _ in range(3):
        refused = dune.start_pipeline(1000)
        assert (refused.status_code, refused.headers.get("Retry-After")) == (429, "2"), refused.text
    started = dune.start_pipeline(1000)
    assert started.status_code == 200, started.text
    status_path = f"/v1/pipelines/executions/{started.json()['pipeline_execution_id']}/status"
    assert [dune.call("GET", status_path).status_code for _ in range(3)] == [503, 503, 200]
    assert dune.control.executions_started(1000) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_an_answer_is_lost_after_the_request_was_carried_out(dune: Dune, kind: str) -> None:
    run_block(dune, f"lost-answer-{kind}")
    with pytest.raises(requests.ConnectionError):
        dune.start_pipeline(1000)
    assert dune.control.executions_started(1000) == 1  # the pipeline started although no answer came
    assert dune.start_pipeline(1000).status_code == 200  # only the next request lost its answer


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_reset_forgets_runs_and_faults_and_the_seed_restores_the_catalog(dune: Dune, kind: str) -> None:
    run_block(dune, f"fail-{kind}")
    run_block(dune, f"errors-{kind}")
    assert dune.start_pipeline(1000).status_code == 429
    assert dune.control.counts() and dune.control.requests()
    run_block(dune, f"reset-{kind}")
    assert dune.control.counts() == {} and dune.control.requests() == []
    assert dune.start_pipeline(1000).status_code == 200  # the queued 429s are gone
    status = dune.final_status(dune.execute_1001())
    assert status["state"] == "QUERY_STATE_COMPLETED", status  # query 1001 is the demo's again
