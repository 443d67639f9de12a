"""The benchmarks are run by hand (``make bench``); here only their shared helpers and wiring are checked."""

from __future__ import annotations

import importlib

import pytest

from bench import common
from bench.__main__ import BENCHMARKS, HEADLINES


def test_percentile_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert common.percentile(values, 50) == 50.0
    assert common.percentile(values, 99) == 99.0
    assert common.percentile(values, 100) == 100.0
    assert common.percentile([3.0], 99) == 3.0
    assert common.percentile([], 99) == 0.0


def test_summarize() -> None:
    assert common.summarize([]) == {"n": 0}
    summary = common.summarize([4.0, 1.0, 3.0, 2.0])
    assert summary == {"n": 4, "min": 1.0, "median": 2.5, "p99": 4.0, "max": 4.0}


def test_print_table_aligns_numbers_right(capsys: pytest.CaptureFixture[str]) -> None:
    common.print_table("T", ["name", "value"], [["a", 1.5], ["longer", 1234.0]])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "T"
    assert lines[2].startswith("name  ")
    assert lines[4].endswith("  1.5") and lines[5].endswith("1,234")
    assert len({len(line) for line in lines[2:]}) == 1


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_benchmark_has_a_main_and_a_headline(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert callable(module.main)
    assert name in HEADLINES


def test_unknown_benchmark_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.__main__ import main

    with pytest.raises(SystemExit):
        main(["--only", "nope"])
    assert "unknown benchmark(s) nope" in capsys.readouterr().err
