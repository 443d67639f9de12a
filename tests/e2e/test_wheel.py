"""The package a user installs: ``make dist``'s wheel in a virtualenv with only Airflow, and the sdist.

The virtualenv (``.venv-wheel-airflow-<newest>-py<X.Y>``) holds Airflow's newest release installed with its
committed constraints file and nothing else: no extra, no checkout on ``sys.path``. It is kept between runs: Airflow
is reinstalled only when the constraints file or the Python changes, the wheel whenever its contents change
(the hash of its ``RECORD``, which lists every file's hash). In it:

1. ``airflow providers list`` shows the provider with its version;
2. every public module imports, from the virtualenv's site-packages;
3. the features of a missing extra (pandas, OpenLineage) fail with an error naming the extra;
4. ``dune-emulator --help`` works;
5. the ``dune_nightly_refresh`` example DAG, copied into a temporary DAG folder, runs with
   ``airflow dags test`` against the wheel's ``dune-emulator`` and really defers.

The sdist must hold what a downstream packager needs and nothing local. Both come from one ``make dist`` run (into a
temporary folder), which also runs ``twine check --strict``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_dune import __version__
from airflow_provider_dune.testing.emulator import DuneEmulatorClient
from airflow_provider_dune.testing.process import START_LINE_MARKER
from example_dags.demo import DAG_ID, REPO_ROOT, TASK_ID, dags_test_setup_commands, read_run
from tests import matrix

pytestmark = pytest.mark.e2e

NEWEST_AIRFLOW = matrix.airflow_releases()[-1]
CONSTRAINTS = REPO_ROOT / "constraints" / f"airflow-{NEWEST_AIRFLOW}.txt"
PYTHON_TAG = f"{sys.version_info.major}.{sys.version_info.minor}"
WHEEL_VENV = REPO_ROOT / f".venv-wheel-airflow-{NEWEST_AIRFLOW}-py{PYTHON_TAG}"
API_KEY = "wheel-test-key"
PIPELINE_TRIGGER = "airflow_provider_dune.triggers.pipeline.DunePipelineTrigger"
#: A pytest plugin: it needs pytest, which is where it is used (``-p airflow_provider_dune.testing.pytest_plugin``).
NEEDS_PYTEST = {"airflow_provider_dune.testing.pytest_plugin"}
#: What the sdist must hold besides the package: the tests, docs, example DAGs and constraints files.
SDIST_FOLDERS = ("airflow_provider_dune", "tests", "docs", "example_dags", "constraints", "bench")
SDIST_FILES = ("LICENSE", "README.md", "CONTRIBUTING.md", "SECURITY.md", "pyproject.toml", "Makefile", "PKG-INFO")
#: Local folders that must never be in a distribution, besides virtualenvs (``.venv*``) and bench/results/.
LOCAL_DIRS = {"build", "dist", ".demo", ".airflow_home", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
LOCAL_DIRS |= {".git", ".venv-tools"}


def _is_local(name: str) -> bool:
    parts = Path(name).parts
    return (
        bool(set(parts) & LOCAL_DIRS)
        or any(part.startswith(".venv") for part in parts)
        or name.startswith("bench/results/")
        or name.endswith((".pyc", ".pyo"))
    )


def _run(argv: list[str], *, timeout: float = 600, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, argv))}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


# -- building and installing ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``make dist`` into a temporary folder: the sdist and the wheel, both through ``twine check --strict``."""
    out = tmp_path_factory.mktemp("dist")
    result = _run(["make", "--no-print-directory", "dist", f"DIST_DIR={out}"], cwd=REPO_ROOT)
    assert result.stdout.count("PASSED") == 2, result.stdout[-2000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def _wheel_hash(wheel: Path) -> str:
    """The hash of the wheel's contents: its RECORD holds every other file's hash (timestamps do not count)."""
    with zipfile.ZipFile(wheel) as archive:
        (record,) = (name for name in archive.namelist() if name.endswith(".dist-info/RECORD"))
        return hashlib.sha256(archive.read(record)).hexdigest()


def _stamp_matches(stamp: Path, key: str) -> bool:
    return stamp.is_file() and stamp.read_text() == key


@pytest.fixture(scope="module")
def venv(dist: dict[str, Path]) -> Path:
    """The clean virtualenv with only Airflow (newest release, its constraints) and the wheel."""
    python = WHEEL_VENV / "bin" / "python"
    airflow_key = hashlib.sha256(CONSTRAINTS.read_bytes() + sys.version.encode()).hexdigest()
    airflow_stamp, wheel_stamp = WHEEL_VENV / ".installed-airflow", WHEEL_VENV / ".installed-wheel"
    if not _stamp_matches(airflow_stamp, airflow_key):
        shutil.rmtree(WHEEL_VENV, ignore_errors=True)
        _run([sys.executable, "-m", "venv", str(WHEEL_VENV)])
        _run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "-c",
                str(CONSTRAINTS),
                f"apache-airflow=={NEWEST_AIRFLOW}",
            ]
        )
        airflow_stamp.write_text(airflow_key)
    wheel_key = _wheel_hash(dist["wheel"])
    if not _stamp_matches(wheel_stamp, wheel_key):
        wheel_stamp.unlink(missing_ok=True)
        _run([str(python), "-m", "pip", "uninstall", "--quiet", "--yes", "airflow-provider-dune"])
        _run([str(python), "-m", "pip", "install", "--quiet", "-c", str(CONSTRAINTS), str(dist["wheel"])])
        wheel_stamp.write_text(wheel_key)
    return WHEEL_VENV


@pytest.fixture(scope="module")
def site_packages(venv: Path) -> Path:
    (path,) = venv.glob("lib/python*/site-packages")
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working directory of every command: outside the checkout, so nothing imports from it."""
    return tmp_path_factory.mktemp("wheel-cwd")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, venv: Path) -> dict[str, str]:
    """A user's environment: the clean virtualenv first on PATH, its own AIRFLOW_HOME, no PYTHONPATH."""
    home = tmp_path_factory.mktemp("wheel-airflow-home")
    dags = home / "dags"
    dags.mkdir()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "DUNE_", "PYTHON", "VIRTUAL_ENV"))}
    return {
        **base,
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }


def _python(venv: Path, code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


# -- the wheel -----------------------------------------------------------------------------------------------


def test_the_wheel_holds_the_package_and_the_license(dist):
    with zipfile.ZipFile(dist["wheel"]) as archive:
        names = archive.namelist()
    dist_info = f"airflow_provider_dune-{__version__}.dist-info"
    assert f"{dist_info}/licenses/LICENSE" in names
    assert {name.split("/")[0] for name in names} == {"airflow_provider_dune", dist_info}
    assert "airflow_provider_dune/py.typed" in names
    assert "airflow_provider_dune/testing/default_seed.json" in names
    assert not [name for name in names if _is_local(name)]


def test_the_clean_venv_has_airflow_and_no_extra(venv, env, workdir):
    code = (
        "import importlib.metadata as m, importlib.util as u; "
        "print(m.version('apache-airflow'), m.version('airflow-provider-dune'), "
        "u.find_spec('pandas') is None, u.find_spec('airflow.providers.openlineage') is None)"
    )
    result = _python(venv, code, env, workdir)
    assert result.stdout.split() == [NEWEST_AIRFLOW, __version__, "True", "True"], result.stderr[-3000:]


def test_airflow_lists_the_provider_with_its_version(venv, env, workdir):
    result = _run([str(venv / "bin" / "airflow"), "providers", "list", "--output", "json"], env=env, cwd=workdir)
    providers = {p["package_name"]: p["version"] for p in json.loads(result.stdout[result.stdout.index("[") :])}
    assert providers.get("airflow-provider-dune") == __version__, providers


def test_every_public_module_imports_from_site_packages(venv, env, workdir, site_packages):
    code = f"""
import importlib, json, pkgutil
import airflow_provider_dune as package
names = [m.name for m in pkgutil.walk_packages(package.__path__, "airflow_provider_dune.")]
public = [n for n in names if not any(part.startswith("_") for part in n.split(".")) and n not in {NEEDS_PYTEST!r}]
modules = {{n: importlib.import_module(n).__file__ for n in public}}
print(json.dumps({{"package": package.__file__, "modules": modules}}))
"""
    result = _python(venv, code, env, workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(imported["package"]).is_relative_to(site_packages)
    modules = imported["modules"]
    assert len(modules) > 40 and "airflow_provider_dune.operators.pipeline" in modules
    assert all(Path(path).is_relative_to(site_packages) for path in modules.values()), modules


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (
            "pandas",
            "from airflow_provider_dune.hooks.dune import DuneHook; "
            "DuneHook().get_results_dataframe('01HZZZZZZZZZZZZZZZZZZZZZZZ')",
        ),
        (
            "openlineage",
            "from airflow_provider_dune.operators.pipeline import DuneExecutePipelineOperator; "
            "DuneExecutePipelineOperator(task_id='t', query_id=1).get_openlineage_facets_on_complete(None)",
        ),
    ],
    ids=["pandas", "openlineage"],
)
def test_a_missing_extra_is_named(venv, env, workdir, extra, code):
    result = _python(venv, code, env, workdir)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("airflow_provider_dune.api.errors.DuneError"), result.stderr[-3000:]
    assert f"pip install 'airflow-provider-dune[{extra}]'" in last_line


def test_the_emulator_command_works(venv, env, workdir):
    result = _run([str(venv / "bin" / "dune-emulator"), "--help"], env=env, cwd=workdir)
    assert result.stdout.startswith("usage: dune-emulator")


@contextlib.contextmanager
def _wheel_emulator(venv: Path, env: dict[str, str], workdir: Path) -> Iterator[str]:
    """The wheel's ``dune-emulator`` on a free port (demo catalog, durations x 0.3); yields its API URL."""
    process = subprocess.Popen(
        [str(venv / "bin" / "dune-emulator"), "--port", "0", "--time-scale", "0.3"],
        env={**env, "DUNE_EMULATOR_API_KEY": API_KEY},
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert START_LINE_MARKER in line, line
        threading.Thread(target=process.stdout.read, daemon=True).start()  # never block on a full pipe
        yield line.split(START_LINE_MARKER, 1)[1].strip()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_nightly_example_dag_runs_and_defers_from_the_wheel(venv, env, workdir, site_packages):
    dags = Path(env["AIRFLOW__CORE__DAGS_FOLDER"])
    dag_file = dags / "dune_nightly_refresh.py"
    # The example as a user copies it, plus one line reporting where the provider was imported from.
    dag_file.write_text(
        (REPO_ROOT / "example_dags" / "dune_nightly_refresh.py").read_text()
        + "\nimport airflow_provider_dune\n\nprint('provider imported from', airflow_provider_dune.__file__)\n"
    )
    airflow = str(venv / "bin" / "airflow")
    with _wheel_emulator(venv, env, workdir) as url:
        conn = {"conn_type": "dune", "host": url, "password": API_KEY, "extra": {"timeout": 10}}
        run_env = {
            **env,
            "AIRFLOW_CONN_DUNE_DEFAULT": json.dumps(conn),
            "DUNE_POLL_INTERVAL": "0.4",
            "AIRFLOW__DUNE__MIN_POLL_INTERVAL": "0.4",
            "DUNE_RETRIES": "0",
        }
        for command in [["db", "migrate"], *dags_test_setup_commands()]:
            _run([airflow, *command], env=run_env, cwd=workdir)
        result = _run([airflow, "dags", "test", DAG_ID, "2024-06-01"], env=run_env, cwd=workdir, timeout=300)
        counts = DuneEmulatorClient(url).counts()
    output = result.stdout + result.stderr
    assert API_KEY not in output
    imported_from = [
        line.split("provider imported from ", 1)[1] for line in output.splitlines() if "imported from" in line
    ]
    assert imported_from and all(Path(path.strip()).is_relative_to(site_packages) for path in imported_from)
    run = read_run(Path(env["AIRFLOW_HOME"]) / "airflow.db")
    assert run["run_state"] == "success", output[-6000:]
    assert run["task"]["state"] == "success"
    assert "[DAG TEST] running trigger in line" in output
    assert "Pausing task as DEFERRED" in output
    assert [t["classpath"] for t in run["triggers"]] == [PIPELINE_TRIGGER]
    assert run["xcoms"]["return_value"]["state"] == "completed", run["xcoms"]
    assert counts["execute_query_pipeline"] == 1
    assert counts["get_pipeline_status"] >= 2  # once by the task, then by the trigger
    assert TASK_ID in output


# -- the sdist -----------------------------------------------------------------------------------------------


def _tracked_files() -> set[str] | None:
    """The files git tracks (None outside a git checkout, e.g. in an unpacked sdist)."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        listed = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
        return set(listed.stdout.splitlines())
    return None


def test_the_sdist_holds_what_a_packager_needs_and_nothing_local(dist):
    with tarfile.open(dist["sdist"]) as archive:
        members = [m.name.split("/", 1)[1] for m in archive.getmembers() if m.isfile()]
    top = {name.split("/")[0] for name in members}
    assert set(SDIST_FOLDERS) <= top
    assert set(SDIST_FILES) <= set(members)
    assert [name for name in members if _is_local(name)] == []
    # Only setuptools' own metadata is generated; every other file is a tracked file of the repository.
    generated = {"PKG-INFO", "setup.cfg"} | {n for n in members if n.startswith("airflow_provider_dune.egg-info/")}
    tracked = _tracked_files()
    if tracked is not None:
        assert set(members) - generated <= tracked
        wanted = {
            name for name in tracked if name.split("/")[0] in SDIST_FOLDERS and not name.startswith("bench/results")
        }
        assert wanted <= set(members), sorted(wanted - set(members))
