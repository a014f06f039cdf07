# -*- test-case-name: halp.test.test_simmodel -*-
"""
``python -m halp.sim``: run the model (:mod:`halp.sim.model`) once with
the knobs given, and once more for every hostile fraction of the eclipse
sweep, in worker processes; print a table, write the results as JSON
and draw them as a PNG.

Each run is deterministic for its seed: the same command prints the same
figures on any machine (only the progress lines, which report wall-clock
time, differ).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import sys
import time
from typing import Any, Callable, NoReturn, Sequence

from twisted.logger import ILogObserver, LogEvent, globalLogBeginner
from zope.interface import implementer

from halp.command import CommandParser, check_output, fail, pyplot, save
from halp.sim.model import BEHAVIOURS, Config, simulate

__all__ = ["main", "QUICK", "SWEEP"]

NAME = "halp.sim"

#: The target run's eclipse sweep: hostile fractions, each a run of its own.
SWEEP = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
#: What a sweep run changes from the main run: it measures bootstraps only.
SWEEP_RUN = {"window": 900.0, "inserts": 0, "bootstraps": 500}
#: ``--quick``: small sizes, a run of seconds.
QUICK = {
    "servers": 40, "peers": 4000, "window": 600.0, "inserts": 4, "bootstraps": 150,
}
QUICK_SWEEP = (0.0, 0.3, 0.7)
QUICK_SWEEP_RUN = {"window": 600.0, "inserts": 0, "bootstraps": 120}
#: The target run's hostile behaviours (``flood`` is measured on its own:
#: see docs/simulation.md).
TARGET_BEHAVIOURS = ("stale", "attacker", "drop")


def _fail(message: str) -> NoReturn:
    fail(NAME, message)


_HELP = {
    "servers": "HALP servers, every one real (default 1000)",
    "peers": "the application's peers (default 100000)",
    "online": "fraction of the peers online at any time (default 0.5)",
    "churn": "fraction of the online peers that leave within an hour (default 0.3)",
    "hostile": "fraction of hostile servers (default 0.2)",
    "behaviours": f"what hostile servers do, in turn: some of {','.join(BEHAVIOURS)} "
    f"(default {','.join(TARGET_BEHAVIOURS)})",
    "hostile_peers": "fraction of the peers' announcements that are sybils' (default 0)",
    "sybil_groups": "/16 networks the sybils live in (default 4)",
    "latency": "least one-way latency between two hosts, seconds (default 0.02)",
    "jitter": "how much more a link may take, seconds (default 0.08)",
    "loss": "probability that a segment is lost and sent again (default 0)",
    "fanout": "the servers' --fanout (default 5)",
    "push_delay": "the servers' --push-delay (default 0)",
    "sync_interval": "the servers' --sync-interval (default 250)",
    "test_interval": "the servers' --peer-test-interval (default 3)",
    "refresh": "seconds between an online peer's announcements (default 3600)",
    "background": "seconds between deliveries of the untracked announcements (default 300)",
    "window": "simulated seconds (default 3600)",
    "inserts": "tracked inserts, sent through the real client and federation (default 50)",
    "bootstraps": "cold clients, each a real HALPClient (default 2000)",
    "client_seeds": "seed servers a cold client is given, drawn at random (default 3)",
    "queries": "servers a client asks at once, HALPClient's queries (default 4)",
    "server_seeds": "--peer seeds of each server (default 3)",
    "limit": "entries a client asks for in a lookup (default 20)",
    "want": "live honest peers a bootstrap needs (default 8)",
    "max_lookups": "lookups of the label a client tries before it gives up (default 5)",
    "flood_interval": "seconds between a flooding server's batches (default 3600)",
    "flood_size": "sybil entries in a flooding server's batch (default 50)",
    "stale_age": "how old a stale server's entries are, seconds (default 7200)",
    "label_size": "entries of the label each store starts with (default 300)",
    "seed": "the run's seed (default 1)",
}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = CommandParser(
        NAME,
        description="Simulate HALP servers, peers, churn and hostile servers "
        "(see docs/simulation.md).",
    )
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, a run of seconds (a smoke test)")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "behaviours":
            parser.add_argument(flag, default=None, help=_HELP[f.name])
            continue
        kind = type(f.default)
        parser.add_argument(flag, type=kind, default=None, metavar=kind.__name__.upper(),
                            help=_HELP[f.name])
    parser.add_argument("--sweep", default=None, metavar="F,F,...",
                        help="hostile fractions of the eclipse sweep, or 'none' "
                        f"(default {','.join(map(str, SWEEP))})")
    parser.add_argument("--jobs", type=int, default=2,
                        help="worker processes (default 2)")
    parser.add_argument("--json", default="sim-results.json", metavar="PATH",
                        help="where to write the results (default sim-results.json)")
    parser.add_argument("--png", default=None, metavar="PATH",
                        help="draw the results here (needs matplotlib)")
    return parser.parse_args(argv)


def _config(args: argparse.Namespace) -> tuple[Config, dict[str, Any], tuple[float, ...]]:
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    values["behaviours"] = TARGET_BEHAVIOURS
    for f in dataclasses.fields(Config):
        given = getattr(args, f.name)
        if given is None:
            continue
        if f.name == "behaviours":
            given = tuple(b.strip() for b in given.split(",") if b.strip())
        values[f.name] = given
    config = Config(**values)
    try:
        config.check()
    except ValueError as e:
        _fail(str(e))
    sweep: tuple[float, ...] = QUICK_SWEEP if args.quick else SWEEP
    if args.sweep is not None:
        if args.sweep == "none":
            sweep = ()
        else:
            try:
                sweep = tuple(float(x) for x in args.sweep.split(","))
            except ValueError:
                _fail(f"--sweep: not a list of fractions: {args.sweep!r}")
            if any(not 0 <= x <= 0.9 for x in sweep):
                _fail("--sweep: fractions go from 0 to 0.9")
    sweep_run = dict(QUICK_SWEEP_RUN if args.quick else SWEEP_RUN)
    return config, sweep_run, sweep


@implementer(ILogObserver)
def _discard(event: LogEvent) -> None:
    pass


def _quiet() -> None:
    """Thousands of servers log; the figures are what counts."""
    globalLogBeginner.beginLoggingTo([_discard], redirectStandardIO=False, discardBuffer=True)


def _job(job: tuple[str, Config, bool]) -> tuple[str, dict[str, Any], float]:
    name, config, loud = job
    _quiet()
    started = time.monotonic()
    progress: Callable[[str], None] | None = None
    if loud:
        def progress(line: str) -> None:
            print(f"halp.sim: {name}: {line}", file=sys.stderr, flush=True)
    return name, simulate(config, progress), time.monotonic() - started


def run(config: Config, sweep_run: dict[str, Any], sweep: Sequence[float], jobs: int
        ) -> dict[str, Any]:
    """The main run and the sweep's runs; their results by name."""
    work: list[tuple[str, Config, bool]] = [("main", config, True)]
    for fraction in sweep:
        work.append((f"hostile {fraction:g}",
                     dataclasses.replace(config, hostile=fraction, **sweep_run), False))
    out: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    if jobs <= 1:
        results = map(_job, work)
        for name, result, spent in results:
            out[name], seconds[name] = result, spent
            _done(name, spent)
    else:
        context = multiprocessing.get_context("spawn")
        with context.Pool(min(jobs, len(work)), maxtasksperchild=1) as pool:
            for name, result, spent in pool.imap_unordered(_job, work):
                out[name], seconds[name] = result, spent
                _done(name, spent)
    return {"runs": out, "seconds": seconds}


def _done(name: str, spent: float) -> None:
    print(f"halp.sim: {name}: done in {spent:.0f} s", file=sys.stderr, flush=True)


# -- the report ------------------------------------------------------------------


def _f(value: Any, form: str = "{:.2f}") -> str:
    return "-" if value is None else form.format(value)


def table(report: dict[str, Any]) -> str:
    """The results as text."""
    main_run = report["runs"]["main"]
    c = main_run["config"]
    lines = [
        f"{c['servers']} servers ({main_run['honest_servers']} honest; hostile "
        f"{c['hostile']:.0%}: {','.join(c['behaviours'])}), {c['peers']:,} peers "
        f"({c['online']:.0%} online, {c['churn']:.0%} of them leave per hour), "
        f"{c['window'] / 60:.0f} simulated minutes, seed {c['seed']}",
        "",
        "Propagation of tracked inserts (time, and push and insert messages, until honest servers store them):",
    ]
    target = main_run["target_rounds"]
    for name, p in main_run["propagation"].items():
        lines.append(
            f"  {name:>4} of honest servers: {p['reached']}/{main_run['tracked_inserts']} inserts; "
            f"median {_f(p['median_s'])} s, worst {_f(p['max_s'])} s "
            f"({_f(p['max_rounds'], '{:.3f}')} sync rounds; target {target:.1f}); "
            f"median {_f(p['median_messages'], '{:,.0f}')} messages"
        )
    for short in main_run["short"]:
        lines.append(
            f"  not at 99% when the run ended: the insert at {short['at']:.0f} s "
            f"({short['left']:.0f} s before the end) reached {short['reached']} honest servers; "
            f"its client's seeds: {short['seeds']}; the peer went offline "
            + ("never" if short["peer_left_after"] is None else f"{short['peer_left_after']:.0f} s after it")
        )
    b = main_run["bootstrap"]
    lines += [
        "",
        f"Cold bootstraps: {b['ok']}/{b['finished']} obtained >= {c['want']} live honest peers "
        f"({_f(b['ok_fraction'], '{:.2%}')}; target 99.9%), mean "
        f"{_f(b['mean_lookups_ok'])} lookups (round trips) when they did: {b['lookups_ok']}",
        f"  whole first answer attacker-controlled: {_f(b['eclipsed_fraction'], '{:.2%}')}; "
        f"empty: {_f(b['empty_fraction'], '{:.2%}')}; all seeds hostile: {b['all_seeds_hostile']}",
    ]
    if b["failed_by_seeds"]:
        lines.append(f"  failed, by their seeds: {b['failed_by_seeds']}")
    sweep = sorted(
        (r["config"]["hostile"], r) for name, r in report["runs"].items() if name != "main"
    )
    if sweep:
        lines += ["", "Eclipse sweep (hostile fraction: bootstraps ok, eclipsed, empty):"]
        for fraction, r in sweep:
            sb = r["bootstrap"]
            lines.append(
                f"  {fraction:4.0%}: ok {_f(sb['ok_fraction'], '{:.2%}')}, eclipsed "
                f"{_f(sb['eclipsed_fraction'], '{:.2%}')}, empty {_f(sb['empty_fraction'], '{:.2%}')} "
                f"({sb['finished']} clients)"
            )
    cost = main_run["cost"]
    lines += [
        "",
        f"Cost per server per hour: {cost['messages_per_server_hour']:,.0f} messages, "
        f"{cost['bytes_per_server_hour'] / 1024:,.0f} KiB, "
        f"{cost['connections_per_server_hour']:,.0f} connections, "
        f"{cost['probes_per_server_hour']:,.0f} probes",
    ]
    for kind, v in cost["by_kind"].items():
        lines.append(
            f"  {kind or '(none)':>8}: {v['messages_per_server_hour']:,.0f} messages, "
            f"{v['bytes_per_server_hour'] / 1024:,.1f} KiB"
        )
    estimate = cost["estimated_messages_per_server_hour_with_all_announcements"]
    lines.append(
        f"  with every peer's and server's announcement sent through the federation "
        f"({cost['estimated_peer_announcements_per_hour']:,.0f} + {c['servers']} per hour at "
        f"{_f(main_run['insert_messages'], '{:,.0f}')} messages each): about "
        f"{_f(estimate, '{:,.0f}')} messages per server per hour"
    )
    return "\n".join(lines)


def chart(report: dict[str, Any], path: str) -> str | None:
    """Draw four panels; a note instead when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return "no PNG: matplotlib is not installed"
    main_run = report["runs"]["main"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    ax = axes[0][0]
    honest = main_run["honest_servers"]
    for arrivals in main_run["arrivals"]:
        xs = sorted(arrivals)
        ax.step(xs, [(i + 1) / honest for i in range(len(xs))], where="post",
                color="tab:blue", alpha=0.3, lw=1)
    ax.axhline(0.99, color="grey", ls=":", lw=1)
    sync = main_run["config"]["sync_interval"]
    ax.axvline(sync, color="tab:orange", ls="--", lw=1, label=f"one sync round ({sync:g} s)")
    ax.set_xscale("log")
    ax.set_xlim(0.05, None)
    ax.legend(loc="lower right")
    ax.set_xlabel("seconds after the insert (log scale)")
    ax.set_ylabel("fraction of honest servers storing it")
    ax.set_title("Propagation of each tracked insert")
    ax = axes[0][1]
    sweep = sorted(
        (r["config"]["hostile"], r["bootstrap"]) for n, r in report["runs"].items() if n != "main"
    )
    if sweep:
        xs = [f for f, _ in sweep]
        ax.plot(xs, [b["ok_fraction"] for _, b in sweep], "o-", label=">= want live honest peers")
        ax.plot(xs, [b["eclipsed_fraction"] for _, b in sweep], "s-", color="tab:red",
                label="first answer all attacker's")
        ax.plot(xs, [b["empty_fraction"] for _, b in sweep], "^-", color="tab:grey",
                label="first answer empty")
        ax.legend(loc="center right")
    ax.set_xlabel("fraction of hostile servers")
    ax.set_ylabel("fraction of cold clients")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Cold bootstrap and eclipse vs hostile servers")
    ax = axes[1][0]
    lookups = main_run["bootstrap"]["lookups_ok"]
    most = main_run["config"]["max_lookups"] + 1
    ax.bar(range(1, most + 1), [lookups.get(str(n), 0) for n in range(1, most + 1)])
    ax.set_xticks(range(1, most + 1))
    ax.set_xlabel("lookups until >= want live honest peers (1 = the halp lookup)")
    ax.set_ylabel("clients")
    ax.set_title("Round trips of successful cold bootstraps")
    ax = axes[1][1]
    kinds = main_run["cost"]["by_kind"]
    names = [k or "(none)" for k in kinds]
    ax.barh(names, [v["messages_per_server_hour"] for v in kinds.values()])
    ax.set_xlabel("messages per server per hour")
    ax.set_title("Cost by kind of exchange (simulated traffic)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


def main(argv: Sequence[str] | None = None) -> None:
    """The ``python -m halp.sim`` command."""
    args = _parse(argv)
    config, sweep_run, sweep = _config(args)
    if args.jobs < 1:
        _fail("--jobs must be at least 1")
    check_output(NAME, "--json", args.json, ".json")
    check_output(NAME, "--png", args.png, ".png")
    started = time.monotonic()
    report = run(config, sweep_run, sweep, args.jobs)
    report["quick"] = args.quick
    report["sweep_run"] = sweep_run
    report["wall_seconds"] = time.monotonic() - started
    print(table(report))
    save(report, args.json, report["wall_seconds"], png=args.png,
         draw=lambda png: chart(report, png))
