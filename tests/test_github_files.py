"""The repository's release and contributor files: they say what the Makefile, the matrix and pyproject say.

``make lint-github`` checks the same files against their schemas (check-jsonschema's bundled copies of
schemastore.org's); these tests check their meaning.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import tomllib
import yaml

from tests import matrix

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
DOCS_URL = "https://airflow-provider-dune.readthedocs.io/"
REPOSITORY_URL = "https://github.com/airflow-provider-dune/airflow-provider-dune"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _triggers(workflow: dict[str, Any]) -> Any:
    return workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True


def _runs(workflow: dict[str, Any]) -> list[str]:
    return [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]


def _recipe(target: str) -> tuple[list[str], list[str]]:
    """A Makefile target's prerequisites and recipe lines."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return lines[start].split(":", 1)[1].split(), recipe


def test_ci_runs_every_target_make_test_runs():
    runs = " ".join(_runs(_yaml(WORKFLOWS / "ci.yml")))
    newest, _ = _recipe("test-newest")
    assert set(newest) == {"lint", "lint-github", "docs", "test-unit", "test-e2e"}
    for target in newest:
        assert re.search(rf"(make|\.ci/run) [^\n]*\b{target}\b", runs), target
    # test-matrix is test-airflow per older release; test-pythons is test-python per extra Python
    assert ".ci/run test-airflow AIRFLOW=${{ matrix.airflow }}" in runs
    assert "make test-python PY=${{ matrix.python }}" in runs


def test_ci_takes_its_matrix_from_tests_matrix():
    ci = _yaml(WORKFLOWS / "ci.yml")
    assert "python -m tests.matrix --github" in " ".join(_runs(ci))
    jobs = ci["jobs"]
    assert jobs["airflow"]["strategy"]["matrix"]["airflow"] == "${{ fromJSON(needs.matrix.outputs.older-airflows) }}"
    assert jobs["python"]["strategy"]["matrix"]["python"] == "${{ fromJSON(needs.matrix.outputs.extra-pythons) }}"
    outputs = matrix.github_outputs()
    *older, newest = matrix.airflow_releases()
    assert json.loads(outputs["older-airflows"]) == older and outputs["newest-airflow"] == newest
    assert json.loads(outputs["extra-pythons"]) == matrix.extra_pythons()
    assert outputs["ci-python"] == matrix.CI_PYTHON
    # every job but the extra Pythons' runs on the CI machine's Python
    containers = {name: job.get("container") for name, job in jobs.items() if name not in {"matrix", "python"}}
    assert set(containers.values()) == {"python:${{ needs.matrix.outputs.ci-python }}-bookworm"}, containers


def test_release_publishes_a_checked_version_tag_with_trusted_publishing():
    release = _yaml(WORKFLOWS / "release.yml")
    assert _triggers(release) == {"push": {"tags": ["v*"]}}
    assert release["permissions"] == {"contents": "read"}
    jobs = release["jobs"]
    assert 'python -m tests.release "$GITHUB_REF_NAME"' in _runs({"jobs": {"check": jobs["check"]}})
    assert jobs["build"]["needs"] == "check" and jobs["publish"]["needs"] == "build"
    assert "make dist" in _runs({"jobs": {"build": jobs["build"]}})
    publish = jobs["publish"]
    assert publish["permissions"] == {"id-token": "write"}
    (step,) = [s for s in publish["steps"] if s.get("uses", "").startswith("pypa/gh-action-pypi-publish@")]
    assert "with" not in step, "trusted publishing needs no password or token"
    text = (WORKFLOWS / "release.yml").read_text()
    assert "secrets." not in text and "password" not in text


def test_dependabot_updates_pip_and_actions():
    config = _yaml(ROOT / ".github" / "dependabot.yml")
    assert {update["package-ecosystem"] for update in config["updates"]} == {"pip", "github-actions"}


def test_pre_commit_runs_what_make_lint_runs():
    _, recipe = _recipe("lint")
    lint = [line.replace("$(BIN)/", ".venv/bin/").removesuffix(" .") for line in recipe]
    hooks = _yaml(ROOT / ".pre-commit-config.yaml")["repos"]
    assert [repo["repo"] for repo in hooks] == ["local"]
    entries = [hook["entry"] for hook in hooks[0]["hooks"]]
    assert entries == lint
    assert all(hook["language"] == "system" for hook in hooks[0]["hooks"])


def test_project_urls_and_license():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["urls"] == {
        "Documentation": DOCS_URL,
        "Source": REPOSITORY_URL,
        "Changelog": f"{DOCS_URL}en/stable/changelog.html",
        "Issues": f"{REPOSITORY_URL}/issues",
    }
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    readthedocs = _yaml(ROOT / ".readthedocs.yaml")
    assert readthedocs["sphinx"]["configuration"] == "docs/conf.py"


def test_the_readme_install_line_is_the_documented_one():
    readme = (ROOT / "README.md").read_text()
    installation = (ROOT / "docs" / "installation.rst").read_text()
    (block,) = re.findall(r"```bash\n(AIRFLOW_VERSION=.*?)```", readme, re.DOTALL)
    for line in block.strip().splitlines():
        assert f"   {line.strip()}" in installation or line.strip() in installation, line
    assert f"AIRFLOW_VERSION={matrix.airflow_releases()[-1]}" in block
    assert "--constraint" in block


def test_contributor_files_exist_and_link_each_other():
    contributing = (ROOT / "CONTRIBUTING.md").read_text()
    for command in ("make demo", "make test", "make test-fast", "api/endpoints.py", "SECURITY.md"):
        assert command in contributing, command
    security = (ROOT / "SECURITY.md").read_text()
    assert f"{REPOSITORY_URL}/security/advisories/new" in security
    for place in ("logs", "XCom", "trigger arguments", "exception", "rendered templates"):
        assert place in security, place
    templates = ROOT / ".github" / "ISSUE_TEMPLATE"
    assert {p.name for p in templates.iterdir()} == {"bug_report.yml", "feature_request.yml", "config.yml"}
    assert (ROOT / ".github" / "pull_request_template.md").is_file()
