"""
End to end: ``python -m halp.bench --quick`` starts its servers and load
generator as real processes, and writes a figure (and a ratio to the
baseline) for every scenario of every store.  Nothing here looks at how
fast anything was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

#: The checkout holding this test's ``halp``.
ROOT = str(Path(__file__).resolve().parent.parent)

#: Scenarios measured on every store (``get_size_N`` come from the profile).
SCENARIOS = {
    "get_pipelined",
    "get_reqresp",
    "get_p50",
    "get_p99",
    "get_per_connection",
    "get_size_cost",
    "insert_single",
    "insert_single_p50",
    "insert_batched",
}


def run_bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=ROOT if not path else f"{ROOT}{os.pathsep}{path}")
    return subprocess.run(
        [sys.executable, "-m", "halp.bench", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_quick_run_reports_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = run_bench("--quick", "--json", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text(encoding="utf-8"))
    rows = results["rows"]
    stores = {row["store"] for row in rows}
    assert {"memory", "sqlite"} <= stores, stores
    sizes = results["profile"]["sizes"]
    expected = SCENARIOS | {f"get_size_{size}" for size in sizes}
    for store in stores:
        measured = {row["scenario"] for row in rows if row["store"] == store}
        assert expected <= measured, (store, expected - measured)
    for store in ("memory", "sqlite"):
        measured = {row["scenario"] for row in rows if row["store"] == store}
        assert {"memory_per_entry", "rss_end"} <= measured, store
    for row in rows:
        assert isinstance(row["value"], (int, float)), row
        if row["baseline"] is None:
            # Memory figures: the baseline stores nothing to compare with.
            assert row["scenario"] in ("memory_per_entry", "rss_end"), row
            assert row["ratio"] is None, row
            continue
        assert row["value"] > 0, row
        assert row["baseline"] > 0, row
        assert row["ratio"] > 0, row
        if row["target"] is not None:
            assert isinstance(row["met"], bool), row
    assert "HALP/base" in done.stdout


def test_bad_arguments_are_a_one_line_error(tmp_path: Path) -> None:
    done = run_bench("--frobnicate", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("halp.bench: error:"), done.stderr
