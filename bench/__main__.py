"""``python -m bench``: measure every figure, print a table, write bench/results.json."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

from bench import figures
from bench.harness import BareForward, server

RESULTS = Path(__file__).resolve().parent / "results.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", help="figure names to run (default: all)")
    args = parser.parse_args()
    wanted = set(args.only or [])

    def selected(name: str) -> bool:
        return not wanted or name in wanted

    logging.basicConfig(level=logging.WARNING)
    results: dict[str, dict] = {}
    forward = BareForward()
    if selected("overhead") or selected("throughput") or selected("healthz_p99_ms") or selected("full_view"):
        with server() as srv:
            if selected("overhead"):
                results["overhead"] = figures.analysis_overhead(forward, srv)
            if selected("full_view"):
                from bench.browser import time_to_full_view

                results["full_view"] = time_to_full_view(forward, srv)
            if selected("throughput") or selected("healthz_p99_ms"):
                for figure in figures.throughput_and_health(forward, srv):
                    results[figure.pop("name")] = figure
    if selected("memory"):
        results["memory"] = figures.memory_growth()
    if selected("cold_start"):
        results["cold_start"] = figures.cold_start()
    if selected("peers"):
        results["peers"] = figures.against_peers()

    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "figures": results,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2))
    out = sys.stdout
    # "best": the value the figure would have if everything but the work it cannot skip cost nothing (figures 1, 2).
    out.write(f"{'figure':<16} {'value':>9}  {'target':<30} {'ok':<4} best\n")
    for name, figure in results.items():
        ok = "yes" if figure["ok"] else "NO"
        out.write(f"{name:<16} {figure['value']:>9}  {figure['target']:<30} {ok:<4} {figure.get('best', '')}\n")
    out.write(f"details in {RESULTS}\n")


if __name__ == "__main__":
    main()
