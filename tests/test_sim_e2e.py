"""
End to end: ``python -m halp.sim --quick``, as a user runs it, in a
process of its own.  A quick run is small (40 servers, 4,000 peers, ten
simulated minutes), so these tests check the direction of its results,
not their size: no hostile server means every cold client bootstraps and
none is eclipsed; more hostile servers never make bootstrapping better
(and at 70% some clients fail);
a wider fanout never makes propagation slower; and a run is the same for
its seed, whatever Python's hash seed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.halpserver import run_module

pytestmark = pytest.mark.e2e


def run_sim(*args: str, cwd: Path, hash_seed: str = "0") -> subprocess.CompletedProcess[str]:
    return run_module("halp.sim", *args, cwd=cwd, timeout=600, PYTHONHASHSEED=hash_seed)


def results(tmp_path: Path, name: str, *args: str, hash_seed: str = "0") -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    done = run_sim("--quick", "--json", str(out), *args, cwd=tmp_path, hash_seed=hash_seed)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return report


def test_quick_run(tmp_path: Path) -> None:
    """
    The documented quick run: a table, JSON with the main run and the
    sweep, and a PNG.  With no hostile server every cold client obtains
    its peers and none is eclipsed; as hostile servers grow from 0 to
    70%, bootstraps never get better and eclipses never rarer.
    """
    png = tmp_path / "sim.png"
    out = tmp_path / "sim.json"
    done = run_sim("--quick", "--json", str(out), "--png", str(png), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Propagation of tracked inserts" in done.stdout
    assert "Cold bootstraps:" in done.stdout
    assert "Cost per server per hour" in done.stdout
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    report = json.loads(out.read_text(encoding="utf-8"))
    sweep = sorted(
        (r["config"]["hostile"], r["bootstrap"])
        for name, r in report["runs"].items() if name != "main"
    )
    assert [f for f, _ in sweep] == [0.0, 0.3, 0.7]
    none = sweep[0][1]
    assert none["finished"] == none["clients"] > 0
    assert none["ok_fraction"] == 1.0
    assert none["eclipsed_fraction"] == 0.0
    for (_, fewer), (_, more) in zip(sweep, sweep[1:]):
        assert more["ok_fraction"] <= fewer["ok_fraction"]
        assert more["eclipsed_fraction"] >= fewer["eclipsed_fraction"]
    # At 70% hostile servers some clients fail: the direction shows.
    assert sweep[-1][1]["ok_fraction"] < 1.0
    main = report["runs"]["main"]
    assert main["tracked_inserts"] == 4
    assert main["propagation"]["50%"]["reached"] == 4
    assert main["cost"]["messages_per_server_hour"] > 0


def test_more_fanout_never_slows_propagation(tmp_path: Path) -> None:
    """Fanout 1, 2 and 5 over the same seed: every fraction of honest
    servers is reached no later, and no less often, as fanout grows."""
    runs = [
        results(tmp_path, f"fanout{f}", "--fanout", str(f), "--hostile", "0", "--sweep", "none",
                "--bootstraps", "0", "--inserts", "6")["runs"]["main"]["propagation"]
        for f in (1, 2, 5)
    ]
    for narrow, wide in zip(runs, runs[1:]):
        for fraction in ("50%", "90%", "99%"):
            assert wide[fraction]["reached"] >= narrow[fraction]["reached"]
            if narrow[fraction]["reached"]:
                assert wide[fraction]["median_s"] <= narrow[fraction]["median_s"]


def test_same_seed_same_run(tmp_path: Path) -> None:
    """A run is decided by its seed, not by Python's hash seed."""
    args = ("--sweep", "none", "--bootstraps", "40", "--inserts", "2")
    one = results(tmp_path, "a", *args, hash_seed="1")
    two = results(tmp_path, "b", *args, hash_seed="2")
    other = results(tmp_path, "c", *args, "--seed", "2", hash_seed="1")
    for report in (one, two, other):
        for key in ("seconds", "wall_seconds"):
            report.pop(key)
    assert one == two
    assert one["runs"] != other["runs"]


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    for args, words in (
        (("--servers", "1"), "--servers is out of range"),
        (("--behaviours", "nice"), "--behaviours must name some of"),
        (("--sweep", "0,x"), "--sweep: not a list of fractions"),
        (("--json", str(tmp_path / "missing" / "r.json")), "--json: no such directory"),
        (("--png", str(tmp_path / "chart.svg")), "--png: the file name ends in .png"),
        (("--fanout", "many"), "argument --fanout: invalid int value"),
    ):
        done = run_sim(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stdout == ""
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("halp.sim: error: "), done.stderr
        assert words in lines[0], done.stderr
