"""
What the project's ``python -m`` commands (:mod:`halp.bench`,
:mod:`halp.sim`) share: every mistake on their command line is one line
on stderr, ``NAME: error: ...``, and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, Callable, NoReturn

__all__ = ["CommandParser", "check_output", "fail", "pyplot", "save"]


def fail(name: str, message: str) -> NoReturn:
    """Print ``NAME: error: MESSAGE`` on stderr and exit with status 2."""
    print(f"{name}: error: {message}", file=sys.stderr)
    sys.exit(2)


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (see :func:`fail`)."""

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(prog=f"python -m {name}", **kwargs)
        self.name = name

    def error(self, message: str) -> NoReturn:
        fail(self.name, f"{message} (see --help)")


def check_output(name: str, option: str, path: str | None, suffix: str | None = None) -> None:
    """
    Fail unless ``path`` (given as ``option``) can be written before a
    long run, rather than after it: its folder exists and is writable, it
    is not a folder, and its name ends in ``suffix``.
    """
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        fail(name, f"{option}: no such directory for {path!r}")
    if os.path.isdir(path) or not os.access(folder, os.W_OK):
        fail(name, f"{option}: cannot write {path!r}")
    if suffix is not None and not path.lower().endswith(suffix):
        fail(name, f"{option}: the file name ends in {suffix}, not {path!r}")


def pyplot() -> Any:
    """
    ``matplotlib.pyplot`` on the Agg backend (no display needed), or
    ``None`` when matplotlib is not installed.
    """
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:
        return None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def save(
    results: dict[str, Any],
    path: str,
    seconds: float,
    *,
    png: str | None = None,
    draw: Callable[[str], str | None] | None = None,
    indent: int = 1,
) -> None:
    """
    Draw the chart (``draw(png)``, which returns a note when it cannot),
    write ``results`` as JSON to ``path``, and print the notes (the list
    ``results["notes"]``, with the chart's) and where the results went.
    A chart that fails is a note: the figures matter more than their
    picture.
    """
    notes: list[str] = results.setdefault("notes", [])
    if png is not None and draw is not None:
        try:
            note = draw(png)
        except Exception as e:
            note = f"no PNG: {type(e).__name__}: {e}"
        if note is not None:
            notes.append(note)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=indent)
        f.write("\n")
    for note in notes:
        print(note)
    print(f"results written to {path} ({seconds:.0f} s)")
