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
from pathlib import Path

import pytest

from tests.halpserver import run_module

pytestmark = pytest.mark.e2e

#: Scenarios measured on every server: the ``get`` scenarios
#: (``get_size_N`` come from the profile) ...
GETS = {
    "get_pipelined",
    "get_reqresp",
    "get_p50",
    "get_p99",
    "get_per_connection",
    "get_size_cost",
}
#: ... and, on the servers with their answer cache, the inserts.
INSERTS = {"insert_single", "insert_single_p50", "insert_batched"}


def run_bench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_module("halp.bench", *args, cwd=cwd, timeout=300)


def test_quick_run_reports_every_scenario(tmp_path: Path) -> None:
    out, png = tmp_path / "results.json", tmp_path / "ratios.png"
    done = run_bench("--quick", "--json", str(out), "--png", str(png), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    results = json.loads(out.read_text(encoding="utf-8"))
    rows = results["rows"]
    stores = {row["store"] for row in rows}
    assert {
        "memory", "sqlite", "memory (--answer-cache 0)", "sqlite (--answer-cache 0)"
    } <= stores, stores
    sizes = results["profile"]["sizes"]
    gets = GETS | {f"get_size_{size}" for size in sizes}
    for store in stores - {"redis-server (peer)"}:
        measured = {row["scenario"] for row in rows if row["store"] == store}
        expected = gets if store.endswith("(--answer-cache 0)") else gets | INSERTS
        assert expected <= measured, (store, expected - measured)
    for store in ("memory", "sqlite"):
        measured = {row["scenario"] for row in rows if row["store"] == store}
        assert {"memory_per_entry", "memory_last_label", "rss_end"} <= measured, store
    # Every ratio comes from rounds in which the baseline and HALP ran
    # back to back.
    for server, figures in results["raw"].items():
        if server == "redis-server":  # the peer: one scenario
            assert figures["zrevrange_pipelined"]["ratio"] > 0
            continue
        for scenario in ("get_pipelined", "get_latency", "get_per_connection"):
            assert figures[scenario]["rounds"], (server, scenario)
            for run in figures[scenario]["rounds"]:
                assert set(run) == {"baseline", "halp"}, (server, scenario)
    for row in rows:
        assert isinstance(row["value"], (int, float)), row
        if row["baseline"] is None:
            # Memory figures (the baseline stores nothing to compare with)
            # and the cost of a get as a label grows (a ratio of ratios).
            assert row["scenario"] in (
                "memory_per_entry", "memory_last_label", "rss_end", "get_size_cost"
            ), row
            assert row["ratio"] is None, row
            if row["scenario"] == "get_size_cost":
                assert row["value"] > 0, row
            continue
        assert row["value"] > 0, row
        assert row["baseline"] > 0, row
        assert row["ratio"] > 0, row
        if row["target"] is not None:
            assert isinstance(row["met"], bool), row
    assert "ratio" in done.stdout.splitlines()[0]


def test_bad_arguments_are_a_one_line_error(tmp_path: Path) -> None:
    done = run_bench("--frobnicate", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("halp.bench: error:"), done.stderr
