"""The documentation's sources: example code included by marker, Python blocks, and the README's links.

``make docs`` builds the pages with warnings as errors, which already fails on a missing marker; these checks
run with the unit tests too, and also catch a marker that exists twice (the page would show the wrong code).
"""

from __future__ import annotations

import ast
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.rst"))

_INCLUDE = re.compile(r"^\.\. literalinclude:: (?P<path>\S+)\n(?P<options>(?:[ ]+:.*\n)*)", re.MULTILINE)
_OPTION = re.compile(r":(start-after|end-before): (.+)")


def _includes() -> list[tuple[Path, Path, dict[str, str]]]:
    found = []
    for page in PAGES:
        for match in _INCLUDE.finditer(page.read_text()):
            options = dict(_OPTION.findall(match["options"]))
            found.append((page, (page.parent / match["path"]).resolve(), options))
    return found


def _python_blocks(page: Path) -> list[str]:
    """The bodies of ``.. code-block:: python`` directives (without their options, such as ``:name:``)."""
    blocks = []
    lines = page.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.strip() != ".. code-block:: python":
            continue
        indent = len(line) - len(line.lstrip())
        body = []
        for following in lines[index + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        while body and re.match(r"\s*:[\w-]+:", body[0]):
            body.pop(0)
        blocks.append(textwrap.dedent("\n".join(body)))
    return blocks


def test_pages_include_example_code():
    assert any(options for _, _, options in _includes())


@pytest.mark.parametrize(("page", "path", "options"), _includes(), ids=lambda v: getattr(v, "name", None))
def test_every_included_marker_exists_once(page, path, options):
    assert path.is_file(), f"{page.relative_to(ROOT)} includes {path}, which does not exist"
    text = path.read_text()
    for option in ("start-after", "end-before"):
        marker = options.get(option)
        assert marker, f"{page.relative_to(ROOT)} includes {path.name} without :{option}:"
        assert text.count(marker) == 1, f"{marker!r} appears {text.count(marker)} times in {path.name}"
    start, end = text.index(options["start-after"]), text.index(options["end-before"])
    assert start < end, f"{path.name}: {options['end-before']!r} comes before {options['start-after']!r}"


def test_example_markers_are_paired():
    for path in sorted((ROOT / "example_dags").glob("*.py")):
        text = path.read_text()
        starts = re.findall(r"# \[START (\w+)\]", text)
        ends = re.findall(r"# \[END (\w+)\]", text)
        assert starts == ends, f"{path.name}: START {starts} vs END {ends}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_python_blocks_compile(page):
    for block in _python_blocks(page):
        ast.parse(block, filename=str(page))


def test_readme_relative_links_exist():
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+:", link) and not link.startswith("#")]
    assert local, "the README links to no documentation page"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_the_tested_versions_the_docs_name_are_the_matrix_make_test_runs():
    from tests import matrix

    assert matrix.stale() == [], "run `python -m tests.matrix --write` after changing the matrix"
    assert "3.3.2" in matrix.readme_line() and matrix.readme_line() in (ROOT / "README.md").read_text()


def test_ci_runs_the_python_the_matrix_names():
    from tests import matrix

    if not os.environ.get("DUNE_REQUIRE_PYTHONS"):
        pytest.skip("not the CI run (.ci/run sets DUNE_REQUIRE_PYTHONS)")
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == matrix.CI_PYTHON


def test_the_classifiers_name_exactly_the_pythons_the_matrix_tests():
    import tomllib

    from tests import matrix

    classifiers = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["classifiers"]
    named = sorted(
        c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert named == matrix.tested_pythons()


def test_the_version_has_one_source_and_a_changelog_section():
    import tomllib

    from airflow_provider_dune import __version__
    from airflow_provider_dune.get_provider_info import get_provider_info
    from tests import release

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "airflow_provider_dune.__version__"}
    assert release.package_version() == __version__ == get_provider_info()["versions"][0]
    assert __version__ in release.changelog_entries(), f"docs/changelog.rst has no section for {__version__}"


def test_a_release_needs_the_version_tag_and_a_dated_changelog_section(tmp_path, monkeypatch):
    from tests import release

    version = release.package_version()
    changelog = tmp_path / "changelog.rst"
    monkeypatch.setattr(release, "CHANGELOG", changelog)
    title = f"{version} (in development)"
    changelog.write_text(f"Changelog\n=========\n\n{title}\n{'-' * len(title)}\n\n- Things.\n")
    assert "(YYYY-MM-DD)" in " ".join(release.release_problems(f"v{version}"))
    title = f"{version} (2027-01-15)"
    changelog.write_text(f"Changelog\n=========\n\n{title}\n{'-' * len(title)}\n\n- Things.\n")
    assert release.release_problems(f"v{version}") == []
    assert "is not v" in " ".join(release.release_problems("v99.0.0"))
    changelog.write_text("Changelog\n=========\n")
    assert "no section" in " ".join(release.release_problems(f"v{version}"))
