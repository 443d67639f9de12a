"""Sphinx configuration of the airflow-provider-dune documentation (``make docs``).

The build is offline: no intersphinx, no remote images. Autodoc imports the provider, and with it Airflow, so
Airflow gets a throwaway home under ``build/`` and never needs a metadata database.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

# Importing airflow reads (and may write) $AIRFLOW_HOME; keep that out of the user's ~/airflow.
_airflow_home = ROOT / "build" / "docs-airflow-home"
_airflow_home.mkdir(parents=True, exist_ok=True)
os.environ.setdefault("AIRFLOW_HOME", str(_airflow_home))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")

from airflow_provider_dune import __version__  # noqa: E402

project = "airflow-provider-dune"
author = "airflow-provider-dune maintainers"
copyright = "the airflow-provider-dune maintainers"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

root_doc = "index"
exclude_patterns = ["_build"]
# README.md and the images folder are not pages; only .rst sources are read.
source_suffix = {".rst": "restructuredtext"}

html_theme = "alabaster"
html_title = f"airflow-provider-dune {release}"
html_theme_options = {
    "description": "Apache Airflow provider for Dune",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
html_show_sourcelink = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
# Airflow's own signatures repeat the whole BaseOperator argument list; the provider's are what matter here.
autodoc_inherit_docstrings = False

# -n (nitpicky) resolves every cross-reference. Types that live outside this project (Python, Airflow,
# requests, httpx, pytest, pandas) have no target without intersphinx, which would need the internet at build
# time: they are ignored by name, so a broken reference to one of the provider's documented names still fails.
# So are the provider's internals (private ``_names``, ``utils`` modules, the polling core, the emulator's
# private type aliases): they are not part of the API reference on purpose, but public signatures and base
# classes mention them.
nitpicky = True
_EXTERNAL_MODULES = (
    "airflow|requests|httpx|urllib3|urllib|pytest|_pytest|pandas|upath|ssl|http|asyncio|datetime|os|io"
    "|collections|typing|enum|pathlib|concurrent|socketserver|threading|types|logging|contextvars"
)
nitpick_ignore_regex = [
    (r"py:.*", rf"({_EXTERNAL_MODULES})(\..*)?"),
    (r"py:.*", r"(str|int|float|bool|bytes|dict|list|tuple|set|frozenset|object|type|None|NoneType)"),
    (r"py:.*", r"(Exception|BaseException|ValueError|TypeError|KeyError|OSError)"),
    (r"py:.*", r"(Any|Callable|Iterator|Iterable|Mapping|Sequence|MutableMapping|AsyncIterator|Awaitable|TextIO)"),
    (r"py:.*", r"(TaskDecorator|Context|ObjectStoragePath|DataFrame|Path|T|SplitResult|timedelta|datetime)"),
    # The provider's internals: not in the reference on purpose (see docs/api/index.rst).
    (r"py:.*", r"airflow_provider_dune(\.\w+)*\._\w+(\..*)?"),
    (r"py:.*", r"airflow_provider_dune\.utils\..*"),
    (r"py:.*", r"airflow_provider_dune\.polling\..*"),
    (r"py:.*", r"(Clock|NodeStateStyle|ResponseProfile)"),
]

# `make docs-linkcheck` checks links to local files only: the build machine may have no internet, and the
# external pages (dune.com, airflow.apache.org) are not this project's to keep working.
linkcheck_ignore = [r"https?://.*"]
