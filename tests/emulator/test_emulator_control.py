"""Out-of-process control of the Dune API emulator (control API, client, CLI), lifecycle and the pytest plugin."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from airflow_provider_dune.testing.emulator import (
    DuneEmulator,
    DuneEmulatorClient,
    DuneEmulatorClientError,
    Fault,
    main,
)
from tests.emulator.conftest import WRITE_KEY, Api, FakeClock

REPO_ROOT = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"^Dune API emulator listening on (http://127\.0\.0\.1:(\d+)/api)$")


# -- control API and client -------------------------------------------------------------------------------------


def test_client_drives_the_emulator(emu: DuneEmulator, api: Api) -> None:
    client = DuneEmulatorClient(emu.url)  # the API URL works as well as the root URL
    assert client.base_url == emu.base_url
    assert client.url == emu.url
    assert client.health()

    client.add_materialized_view("dune.ctl.result_v", query_id=5001, duration=0.05)
    client.add_query(5002, name="ctl", duration=0.05, depends_on=("dune.ctl.result_v",), parameters=("d",))
    plan = api.get("/v1/query/5002/pipeline").json()["pipeline"]["nodes"]
    assert [n.get("materialized_view_refresh", {}).get("name") for n in plan] == ["dune.ctl.result_v", None]
    assert api.get("/v1/query/5002").json()["name"] == "ctl"

    client.inject("execute_query_pipeline", Fault.status(429, retry_after=1, times=2), Fault.drop(), query_id=5002)
    for _ in range(2):
        response = api.post("/v1/query/5002/pipeline/execute", json={"performance": "medium"})
        assert (response.status_code, response.headers["Retry-After"]) == (429, "1")
    with pytest.raises(requests.exceptions.ConnectionError):
        api.post("/v1/query/5002/pipeline/execute", json={"performance": "medium"})
    api.run_query_pipeline(5002)

    assert client.counts() == {"get_query_pipeline": 1, "get_query": 1, "execute_query_pipeline": 4}
    assert client.executions_started() == 1
    assert client.executions_started(5002) == 1
    assert client.executions_started(1) == 0
    recorded = client.requests()
    assert recorded[0]["endpoint"] == "get_query_pipeline"
    assert {r["headers"].get("X-Dune-Api-Key") for r in recorded} == {"***"}
    assert [r["fault"] for r in recorded][-4:] == ["status", "status", "drop", None]

    client.set_rate_limit(read_per_minute=1, write_per_minute=None)
    assert [api.get("/v1/query/5002").status_code for _ in range(2)] == [200, 429]
    client.set_rate_limit(None, None)

    client.set_node_state_style("query_state")
    assert emu.node_state_style == "query_state"

    client.load_seed({"queries": [{"query_id": 5003, "duration": 2}]}, time_scale=0.5)
    assert api.get("/v1/query/5003").status_code == 200

    client.reset()
    assert client.counts() == {}
    assert client.executions_started() == 0
    assert api.get("/v1/query/5002").status_code == 200  # queries survive a reset


def test_connections_opened_counts_tcp_connections_not_requests(emu: DuneEmulator) -> None:
    client = DuneEmulatorClient(emu.url)  # urllib: one connection per control call
    client.reset()
    assert emu.connections_opened == 0
    headers = {"X-Dune-Api-Key": WRITE_KEY}
    with requests.Session() as session:
        for _ in range(5):
            assert session.get(emu.url + "/v1/query/1001", headers=headers).status_code in (200, 404)
    assert emu.connections_opened == 1  # keep-alive: five requests on one connection
    for _ in range(3):
        requests.get(emu.url + "/v1/query/1001", headers=headers, timeout=5)
    assert emu.connections_opened == 4
    assert client.connections_opened() == 5  # the control call itself is connection number 5
    emu.reset()
    assert emu.connections_opened == 0


def test_client_reports_errors(emu: DuneEmulator) -> None:
    client = DuneEmulatorClient(emu.base_url)
    with pytest.raises(DuneEmulatorClientError, match=r"HTTP 400.*query_id"):
        client.add_query(0)
    with pytest.raises(DuneEmulatorClientError, match="unknown endpoint"):
        client.inject("nope", Fault.drop())
    with pytest.raises(DuneEmulatorClientError, match="HTTP 400"):
        client._call("POST", "/queries", {"query_id": 1, "colour": "red"})
    with pytest.raises(DuneEmulatorClientError, match="HTTP 404"):
        client._call("GET", "/nothing")
    broken = requests.post(emu.base_url + "/_emulator/queries", data=b"{", timeout=5)
    assert broken.status_code == 400 and "invalid JSON" in broken.json()["error"]
    faults = {"endpoint": "get_query", "faults": [{"kind": "status", "code": 99}]}
    assert requests.post(emu.base_url + "/_emulator/faults", json=faults, timeout=5).status_code == 400
    assert emu.counts == {}  # control calls are not API requests


def test_control_api_can_be_disabled() -> None:
    with DuneEmulator(control_api=False) as emulator:
        response = requests.get(emulator.base_url + "/_emulator/health", timeout=5)
        assert response.status_code == 404
        assert not DuneEmulatorClient(emulator.base_url).health()


def test_client_wait_until_ready_times_out() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = DuneEmulatorClient(f"http://127.0.0.1:{port}", timeout=0.2)
    with pytest.raises(TimeoutError):
        client.wait_until_ready(timeout=0.2)


# -- lifecycle --------------------------------------------------------------------------------------------------


def test_start_stop_frees_the_port_and_closes_connections() -> None:
    emulator = DuneEmulator()
    assert emulator.port == 0 and not emulator.running
    assert emulator.start() is emulator
    port = emulator.port
    assert port > 0 and emulator.url == f"http://127.0.0.1:{port}/api"
    with pytest.raises(RuntimeError, match="already running"):
        emulator.start()
    session = requests.Session()
    session.headers["X-Dune-Api-Key"] = "test-key"
    assert session.get(emulator.url + "/v1/query/1", timeout=5).status_code == 404
    emulator.stop()
    emulator.stop()  # idempotent
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(emulator.url + "/v1/query/1", timeout=5)  # the kept-alive connection was closed too
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_context_manager_and_keys() -> None:
    with DuneEmulator(api_keys={"w": "write", "r": "read"}) as emulator:
        assert emulator.running and emulator.api_key == "w"
        assert requests.get(emulator.url + "/v1/query/1", headers={"X-Dune-Api-Key": "r"}, timeout=5).status_code == 404
    assert not emulator.running
    with pytest.raises(ValueError, match="roles"):
        DuneEmulator(api_keys={"k": "admin"})
    with pytest.raises(ValueError, match="non-empty"):
        DuneEmulator(api_keys={"": "write"})


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "example.com", "::"])
def test_non_loopback_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="allow_remote"):
        DuneEmulator(host=host)
    DuneEmulator(host=host, allow_remote=True)  # allowed when asked for (not started here)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.0.0.2"])
def test_loopback_hosts_are_accepted(host: str) -> None:
    DuneEmulator(host=host)


# -- seeds and the pytest plugin --------------------------------------------------------------------------------


def test_seed_time_scale(clocked: DuneEmulator, capi: Api, clock: FakeClock) -> None:
    seed = {"queries": [{"query_id": 77, "pending": 2, "duration": 8}]}
    clocked.load_seed(seed, time_scale=0.25)
    execution_id = capi.post("/v1/query/77/execute").json()["execution_id"]
    clock.advance(0.4)
    assert capi.execution(execution_id)["state"] == "QUERY_STATE_PENDING"
    clock.advance(0.2)
    assert capi.execution(execution_id)["state"] == "QUERY_STATE_EXECUTING"
    clock.advance(2.0)
    assert capi.execution(execution_id)["state"] == "QUERY_STATE_COMPLETED"


@pytest.mark.parametrize(
    ("seed", "fragment"),
    [
        ({"queries": [{"name": "no id"}]}, "'query_id' is a required property"),
        ({"queries": [{"query_id": 1, "duration": -1}]}, "minimum"),
        ({"materialized_views": [{"name": "v"}]}, "'query_id' is a required property"),
        ({"tables": []}, "Additional properties"),
    ],
)
def test_invalid_seeds_are_rejected(seed: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match="invalid seed") as info:
        DuneEmulator(seed=seed)
    assert fragment in str(info.value)


def test_seed_from_file(tmp_path: Path) -> None:
    path = tmp_path / "seed.json"
    path.write_text(json.dumps({"queries": [{"query_id": 3, "name": "from_file"}]}))
    with DuneEmulator(seed=path) as emulator:
        body = Api(emulator).get("/v1/query/3").json()
    assert body["name"] == "from_file"


def test_plugin_fixtures(dune_emulator: DuneEmulator, dune_emulator_session: DuneEmulator) -> None:
    for emulator in (dune_emulator, dune_emulator_session):
        assert emulator.running and emulator.url.startswith("http://127.0.0.1:")
        assert Api(emulator).get("/v1/query/1001").status_code == 200
        assert Api(emulator, key="read-key").post("/v1/query/1003/execute").status_code == 403
    assert dune_emulator.port != dune_emulator_session.port


# -- command line -----------------------------------------------------------------------------------------------


@pytest.fixture
def cli() -> Iterator[list[subprocess.Popen[str]]]:
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


def start_cli(
    processes: list[subprocess.Popen[str]], *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_dune.testing.emulator", "--port", "0", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
    )
    processes.append(process)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    assert ready, "the emulator did not print its listening line within 30 s"
    line = process.stdout.readline().strip()
    match = LISTENING.match(line)
    assert match, (
        f"unexpected first line {line!r}; stderr: {process.stderr.read() if process.poll() is not None else ''}"
    )
    return process, match.group(1)


@pytest.mark.slow
def test_cli_serves_the_demo_seed_and_stops_on_sigterm(cli: list[subprocess.Popen[str]]) -> None:
    process, url = start_cli(cli, "--api-key", "cli-secret-key", "--time-scale", "0.01")
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    headers = {"X-Dune-Api-Key": "cli-secret-key"}
    query = requests.get(f"{url}/v1/query/1001", headers=headers, timeout=5).json()
    assert query["name"] == "daily_dex_volume"
    assert (
        requests.get(f"{url}/v1/query/1001", headers={"X-Dune-Api-Key": "emulator-key"}, timeout=5).status_code == 401
    )

    client = DuneEmulatorClient(url)
    client.wait_until_ready()
    pipeline = requests.post(
        f"{url}/v1/query/1001/pipeline/execute", headers=headers, json={"performance": "medium"}, timeout=5
    ).json()["pipeline_execution_id"]
    deadline = time.monotonic() + 5
    while (
        requests.get(f"{url}/v1/pipelines/executions/{pipeline}/status", headers=headers, timeout=5).json()["status"]
        != "completed"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert client.executions_started(1001) == 1

    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "cli-secret-key" not in stdout + stderr
    assert stderr == ""  # quiet by default
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/api/v1/query/1001", timeout=2)


@pytest.mark.slow
def test_cli_key_from_environment_read_key_and_sigint(cli: list[subprocess.Popen[str]]) -> None:
    process, url = start_cli(cli, "--read-api-key", "ro", "--verbose", env={"DUNE_EMULATOR_API_KEY": "env-key"})
    assert requests.get(f"{url}/v1/query/1001", headers={"X-Dune-Api-Key": "env-key"}, timeout=5).status_code == 200
    execute = requests.post(f"{url}/v1/query/1003/execute", headers={"X-Dune-Api-Key": "ro"}, json={}, timeout=5)
    assert execute.status_code == 403
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert "dune-emulator: GET /api/v1/query/1001 -> 200" in stderr
    assert "env-key" not in stderr


@pytest.mark.slow
def test_cli_seed_file_and_no_seed(cli: list[subprocess.Popen[str]], tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"queries": [{"query_id": 42, "name": "custom"}]}))
    _, url = start_cli(cli, "--seed", str(seed), "--api-key", "k")
    headers = {"X-Dune-Api-Key": "k"}
    assert requests.get(f"{url}/v1/query/42", headers=headers, timeout=5).json()["name"] == "custom"
    assert requests.get(f"{url}/v1/query/1001", headers=headers, timeout=5).status_code == 404
    _, empty = start_cli(cli, "--no-seed", "--api-key", "k", "--no-control-api")
    assert requests.get(f"{empty}/v1/query/1001", headers=headers, timeout=5).status_code == 404
    assert requests.get(empty.removesuffix("/api") + "/_emulator/health", timeout=5).status_code == 404


@pytest.mark.slow
def test_cli_refuses_non_loopback_hosts() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_dune.testing.emulator", "--host", "0.0.0.0", "--port", "0"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 2
    assert "non-loopback" in result.stderr and "--allow-remote" in result.stderr
    assert "listening" not in result.stdout


def test_main_reports_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", "192.168.1.1"]) == 2
    bad_seed = tmp_path / "bad.json"
    bad_seed.write_text(json.dumps({"queries": [{}]}))
    assert main(["--seed", str(bad_seed), "--port", "0"]) == 2
    assert main(["--seed", str(tmp_path / "missing.json"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "non-loopback" in err and "invalid seed" in err and "missing.json" in err


@pytest.mark.slow
def test_emulator_process_starts_a_child_and_always_stops_it(tmp_path: Path) -> None:
    from airflow_provider_dune.testing.process import emulator_process

    with emulator_process("child-key", log_path=tmp_path / "emu.log", seed=False) as child:
        assert LISTENING.match(f"Dune API emulator listening on {child.url}")
        assert child.client.health()
        response = requests.get(child.url + "/v1/query/1001", headers={"X-Dune-Api-Key": "child-key"}, timeout=5)
        assert response.status_code == 404  # --no-seed: no demo catalog
        assert requests.get(child.url + "/v1/query/1001", timeout=5).status_code == 401
        assert "child-key" not in Path(f"/proc/{child.pid}/cmdline").read_text()  # key via env, not argv
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)
