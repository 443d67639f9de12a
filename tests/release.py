"""The package version and its changelog entry, read once for the tests and the release workflow.

The version lives only in ``airflow_provider_dune/__init__.py`` (``__version__``; pyproject.toml reads it, and
so does the provider info Airflow shows). ``docs/changelog.rst`` has a section per version, titled
``<version> (<date>)`` once released, ``<version> (in development)`` before.

``python -m tests.release <tag>`` (``.github/workflows/release.yml``, with the pushed tag) exits non-zero unless
the tag is ``v<version>`` and the changelog has a released entry for that version. It imports neither Airflow nor
the package, so it runs before anything is installed.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHANGELOG = ROOT / "docs" / "changelog.rst"
#: A version section: its title line, then a line of dashes as long as the title.
SECTION = re.compile(r"^(?P<version>\d+\.\d+\.\d+\S*)(?: \((?P<note>[^)]*)\))?\n-+$", re.MULTILINE)
UNRELEASED = "in development"


def package_version() -> str:
    """``__version__`` of ``airflow_provider_dune/__init__.py``, read without importing the package."""
    module = ast.parse((ROOT / "airflow_provider_dune" / "__init__.py").read_text())
    for node in module.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__version__" for t in node.targets):
            return str(ast.literal_eval(node.value))
    raise LookupError("airflow_provider_dune/__init__.py sets no __version__")


def changelog_entries() -> dict[str, str]:
    """Each version the changelog has a section for, with the note in its title (a date, or "in development")."""
    return {match["version"]: match["note"] or "" for match in SECTION.finditer(CHANGELOG.read_text())}


def release_problems(tag: str) -> list[str]:
    """Why ``tag`` cannot be published (nothing when it can)."""
    version = package_version()
    problems = []
    if tag != f"v{version}":
        problems.append(f"the tag {tag!r} is not v{version}, the version in airflow_provider_dune/__init__.py")
    note = changelog_entries().get(version)
    if note is None:
        problems.append(f"docs/changelog.rst has no section for {version}")
    elif note == UNRELEASED or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", note):
        problems.append(f"docs/changelog.rst: title the {version} section '{version} (YYYY-MM-DD)', the release date")
    return problems


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.release <tag, e.g. v1.2.3>")
    found = release_problems(sys.argv[1])
    for problem in found:
        print(f"Not releasable: {problem}", file=sys.stderr)
    if not found:
        print(f"{sys.argv[1]}: version and changelog entry agree")
    sys.exit(1 if found else 0)
