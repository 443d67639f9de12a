"""Query results written to, and upload sources read from, local files and object storage, with any
universal-pathlib the installed Airflow accepts (0.2.x on 2.11.2/3.1, 0.3.x on 3.2+, either on 3.0)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.memory import MemoryFileSystem
from packaging.requirements import Requirement
from packaging.version import Version

from airflow_provider_dune.api.errors import DuneConfigurationError
from airflow_provider_dune.api.models import ResultMetadata, ResultPage
from airflow_provider_dune.api.states import RunState
from airflow_provider_dune.operators.uploads import DuneUploadOperator
from airflow_provider_dune.testing.emulator import DuneEmulator, Fault
from airflow_provider_dune.utils.results import write_pages
from airflow_provider_dune.utils.storage import LocalFile, ObjectStorageFile, storage_file
from airflow_provider_dune.version_compat import AIRFLOW_VERSION, AirflowFailException
from tests.conftest import REPO_ROOT
from tests.operators.fakes import FakeTI

ROWS: list[dict[str, Any]] = [
    {"day": "2024-06-01", "pool": "a,b", "volume": 1.5},
    {"day": "2024-06-02", "pool": "c", "volume": None},
]
SCHEMA = [{"name": "day", "type": "date"}, {"name": "pool", "type": "varchar"}, {"name": "volume", "type": "double"}]
CSV_TEXT = 'day,pool,volume\n2024-06-01,"a,b",1.5\n2024-06-02,c,\n'


def _pages() -> list[ResultPage]:
    meta = ResultMetadata(column_names=("day", "pool", "volume"))
    return [ResultPage("01EXEC", RunState.COMPLETED, rows=[row], metadata=meta) for row in ROWS]


@pytest.fixture
def object_storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[MemoryFileSystem, list[str | None]]]:
    """A ``memory://`` scheme in Airflow's own filesystem registry (where providers register ``s3://`` and
    the like), recording the connection ids it is asked for."""
    try:  # Airflow 3.1+
        from airflow.sdk.io.fs import _register_filesystems
    except ImportError:  # Airflow 2.11, 3.0
        from airflow.io import _register_filesystems  # type: ignore[attr-defined,no-redef]

    fs = MemoryFileSystem()
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")
    conn_ids: list[str | None] = []

    def memory(conn_id: str | None, options: Any = None) -> MemoryFileSystem:
        conn_ids.append(conn_id)
        return fs

    monkeypatch.setitem(_register_filesystems(), "memory", memory)
    yield fs, conn_ids
    fs.store.clear()


@pytest.mark.parametrize("form", ["relative", "absolute", "file-url", "file-url-localhost"])
def test_local_paths_are_plain_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "out dir" / "rows.csv"
    location = {
        "relative": "out dir/rows.csv",
        "absolute": str(target),
        "file-url": target.as_uri(),
        "file-url-localhost": target.as_uri().replace("file://", "file://localhost"),
    }[form]
    assert storage_file(location) == LocalFile(target)
    assert write_pages(_pages(), location, "csv") == 2
    assert target.read_text() == CSV_TEXT


def test_a_file_url_of_another_host_is_refused() -> None:
    with pytest.raises(DuneConfigurationError, match="another host"):
        storage_file("file://fileserver/share/rows.csv")


def test_results_go_to_object_storage_through_airflows_filesystem_and_connection(
    object_storage: tuple[MemoryFileSystem, list[str | None]],
) -> None:
    fs, conn_ids = object_storage
    location = "memory://my_storage_conn@bucket/exports/2024-06-01/rows.jsonl"
    target = storage_file(location)
    assert isinstance(target, ObjectStorageFile) and target.fs is fs
    assert write_pages(_pages(), location, "jsonl") == 2
    assert conn_ids == ["my_storage_conn", "my_storage_conn"]
    written = fs.cat_file("bucket/exports/2024-06-01/rows.jsonl").decode()
    assert [json.loads(line) for line in written.splitlines()] == ROWS
    assert storage_file("memory://bucket/exports/2024-06-01/rows.jsonl").exists()
    assert conn_ids[-1] is None  # no user part: the filesystem's default connection


def test_an_unknown_storage_scheme_says_what_to_install() -> None:
    with pytest.raises(DuneConfigurationError, match="No filesystem registered for scheme nosuchstore"):
        storage_file("nosuchstore://bucket/rows.csv")


@pytest.mark.parametrize("where", ["local", "object-storage"])
def test_an_upload_source_is_read_from_local_files_and_object_storage(
    dune_emulator: DuneEmulator,
    dune_conn_id: str,
    object_storage: tuple[MemoryFileSystem, list[str | None]],
    tmp_path: Path,
    where: str,
) -> None:
    fs, _ = object_storage
    if where == "local":
        (tmp_path / "labels.csv").write_text(CSV_TEXT)
        source = (tmp_path / "labels.csv").as_uri()
    else:
        fs.pipe_file("bucket/in/labels.csv", CSV_TEXT.encode())
        source = "memory://bucket/in/labels.csv"
    operator = DuneUploadOperator(task_id="up", namespace="team_x", table_name="labels", schema=SCHEMA, source=source)
    context: dict[str, Any] = {"ti": FakeTI(dune_emulator)}
    result = operator.execute(context)  # type: ignore[arg-type]
    assert result["rows_sent"] == result["rows_written"] == 2


def test_a_missing_object_is_reported_before_anything_is_sent(
    dune_emulator: DuneEmulator, dune_conn_id: str, object_storage: tuple[MemoryFileSystem, list[str | None]]
) -> None:
    operator = DuneUploadOperator(
        task_id="up", namespace="team_x", table_name="labels", schema=SCHEMA, source="memory://bucket/none.csv"
    )
    context: dict[str, Any] = {"ti": FakeTI(dune_emulator)}
    with pytest.raises(AirflowFailException, match="does not exist"):  # a bad input: no retries
        operator.execute(context)  # type: ignore[arg-type]
    assert "insert_rows" not in dune_emulator.counts


# -- universal-pathlib 0.3 ---------------------------------------------------------------------------------

#: The files whose tests write results and read upload sources.
STORAGE_TESTS = (
    "tests/utils/test_storage.py",
    "tests/operators/test_uploads.py",
    "tests/operators/test_query_operator.py",
)
CHILD_SELECTION = "not universal_pathlib_0_3"
#: Run with the same ``sys.path`` as the child pytest: which universal-pathlib it imports, and what Airflow's
#: ``ObjectStoragePath`` makes of an object-storage URL with it.
UPATH_PROBE = """
import upath
try:
    from airflow.sdk import ObjectStoragePath
except ImportError:  # Airflow 2.11
    from airflow.io.path import ObjectStoragePath
try:
    ObjectStoragePath("s3://bucket/key.csv")
    refused = ""
except Exception as err:
    refused = str(err)
print(upath.__version__, upath.__file__, "|", refused)
"""


def _accepted_upath() -> Requirement:
    """What the installed Airflow requires of universal-pathlib."""
    for distribution in ("apache-airflow-core", "apache-airflow"):
        try:
            requires = metadata.requires(distribution) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement = Requirement(line)
            if requirement.name == "universal-pathlib" and requirement.marker is None:
                return requirement
    raise AssertionError("the installed Airflow does not require universal-pathlib")


def _newest_pins(*names: str) -> dict[str, str]:
    """``name==version`` pins of the newest Airflow's constraints file (which resolve universal-pathlib 0.3)."""
    newest = max(REPO_ROOT.glob("constraints/airflow-*.txt"), key=lambda p: Version(p.stem.split("-", 1)[1]))
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", newest.read_text(), re.MULTILINE))
    return {name: pins[name] for name in names}


def test_results_and_uploads_with_universal_pathlib_0_3(tmp_path: Path) -> None:
    """The storage tests again, with universal-pathlib 0.3 where this Airflow accepts it but was installed with
    0.2 (Airflow 3.0 with its constraints): 0.3 (the newest constraints' pin) goes into a directory put first
    on the ``sys.path`` of a child pytest. A probe with the same path checks that 0.3 is what gets imported
    and that Airflow's own ``ObjectStoragePath`` is broken with it, so the provider really ran against it."""
    installed = Version(metadata.version("universal-pathlib"))
    pins = _newest_pins("universal-pathlib", "pathlib-abc")
    upath_03 = Version(pins["universal-pathlib"])
    accepted = _accepted_upath()
    if installed >= Version("0.3"):
        pytest.skip(f"nothing to add: universal-pathlib {installed} is installed, this run's storage tests use it")
    if not accepted.specifier.contains(upath_03):
        pytest.skip(f"Airflow {AIRFLOW_VERSION} requires {accepted}: universal-pathlib {upath_03} cannot be installed")
    site = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site)]
        + [f"{name}=={version}" for name, version in pins.items()],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if pip.returncode != 0:
        pytest.skip(f"universal-pathlib {upath_03} could not be installed from the package index: {pip.stderr[-500:]}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # not an xdist worker
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO_ROOT)])
    probe = subprocess.run(
        [sys.executable, "-c", UPATH_PROBE], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    version, refused = probe.stdout.strip().split(" ", 1)[0], probe.stdout.split("|", 1)[1]
    assert Version(version) == upath_03, probe.stdout
    # The environment users without constraints get: Airflow's own ObjectStoragePath does not work in it.
    assert "incompatible with ObjectStoragePath" in refused, probe.stdout
    child = subprocess.run(
        [sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", *STORAGE_TESTS, "-k", CHILD_SELECTION],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    summary = child.stdout[-3000:] + child.stderr[-2000:]
    assert child.returncode == 0, summary
    assert "test_results_go_to_object_storage_through_airflows_filesystem_and_connection PASSED" in child.stdout
    assert "test_an_upload_source_is_read_from_local_files_and_object_storage[object-storage] PASSED" in child.stdout


# -- a failed export leaves the previous file in place --------------------------------------------------------

SEVEN_ROWS = [{"day": f"2026-01-0{i + 1}", "volume": i} for i in range(7)]
YESTERDAY = "day,volume\nyesterday's,complete file\n"


def _export_failing_on_the_third_page(location: str, dune_emulator: DuneEmulator) -> None:
    """Stream a 7-row result in pages of 2 rows to ``location``; the 3rd results request fails."""
    from airflow_provider_dune.api.errors import DuneAPIError
    from airflow_provider_dune.hooks.dune import DuneHook
    from tests.helpers import wait_finished

    dune_emulator.add_query(8101, duration=0.05, rows=SEVEN_ROWS)
    with DuneHook(max_retries=1) as hook:
        execution_id = wait_finished(hook.execute_query(8101).execution_id, pipeline=False)
        dune_emulator.inject("get_execution_results", Fault.slow(0, times=2), Fault.status(400, "boom"))
        with pytest.raises(DuneAPIError, match="boom"):
            write_pages(hook.iter_execution_results(execution_id, page_size=2), location, "csv")


def test_a_failed_export_leaves_the_previous_local_file_untouched(
    dune_emulator: DuneEmulator, dune_conn_id: str, tmp_path: Path
) -> None:
    target = tmp_path / "exports" / "volume.csv"
    target.parent.mkdir()
    target.write_text(YESTERDAY)
    _export_failing_on_the_third_page(str(target), dune_emulator)
    assert target.read_text() == YESTERDAY
    assert sorted(p.name for p in target.parent.iterdir()) == ["volume.csv"]  # no temporary file left behind


def test_a_failed_export_leaves_the_previous_object_untouched(
    dune_emulator: DuneEmulator, dune_conn_id: str, object_storage: tuple[MemoryFileSystem, list[str | None]]
) -> None:
    fs, _ = object_storage
    fs.pipe_file("bucket/exports/volume.csv", YESTERDAY.encode())
    _export_failing_on_the_third_page("memory://bucket/exports/volume.csv", dune_emulator)
    assert fs.cat_file("bucket/exports/volume.csv").decode() == YESTERDAY
    assert [p.rsplit("/", 1)[-1] for p in fs.find("bucket/exports")] == ["volume.csv"]


@pytest.mark.parametrize("where", ["local", "object-storage"])
def test_a_complete_export_replaces_the_previous_file(
    object_storage: tuple[MemoryFileSystem, list[str | None]], tmp_path: Path, where: str
) -> None:
    fs, _ = object_storage
    if where == "local":
        location = str(tmp_path / "volume.csv")
        Path(location).write_text(YESTERDAY)
    else:
        location = "memory://bucket/exports/volume.csv"
        fs.pipe_file("bucket/exports/volume.csv", YESTERDAY.encode())
    assert write_pages(_pages(), location, "csv") == 2
    if where == "local":
        assert Path(location).read_text() == CSV_TEXT
        assert [p.name for p in tmp_path.iterdir()] == ["volume.csv"]
    else:
        assert fs.cat_file("bucket/exports/volume.csv").decode() == CSV_TEXT
        assert [p.rsplit("/", 1)[-1] for p in fs.find("bucket/exports")] == ["volume.csv"]


def test_an_export_to_object_storage_without_its_filesystem_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_dune.api.errors import DuneConfigurationError
    from airflow_provider_dune.utils import storage

    def missing(scheme: str, conn_id: str | None = None) -> Any:
        raise ImportError("No module named 'gcsfs'", name="gcsfs")

    monkeypatch.setattr(storage, "get_fs", missing)
    with pytest.raises(DuneConfigurationError, match=r"gcsfs.*apache-airflow-providers-google"):
        storage.storage_file("gs://bucket/out/result.csv")
