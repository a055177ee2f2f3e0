"""One idle ratio of ``python -m bench scale``, re-measured alone: a setup against its floor.

``python -m bench.scale_pair SETUP [--connections N] [--rounds R]`` (defaults 10,000, 5)

Runs the named setup of ``bench/scale.py`` (``peerwatch``, ``"peerwatch, batched pings,
callbacks + uvloop"``, ...) and the floor on the same loop, interleaved round by round,
with the full run's plan (heartbeat interval 10 s, timeout 30 s, two 10 s windows), and
prints each round's ratio (the median of its windows' ratios, as the full run computes it)
and their min/median/max. No detection and no report: minutes instead of the full run's
forty, for checking one change against one target. Nothing is written.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from bench.scale import FULL, SETUPS, fits, measure, window_ratios


def main(argv: list[str] | None = None) -> int:
    names = [setup.label for setup in SETUPS if setup.kind != "floor"]
    parser = argparse.ArgumentParser(prog="python -m bench.scale_pair", description=__doc__)
    parser.add_argument("setup", choices=names, metavar="SETUP", help=f"one of {names}")
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args(argv)
    if options.connections < 100 or not 1 <= options.rounds <= 20:
        parser.error("--connections must be at least 100 and --rounds between 1 and 20")
    if (room := fits(options.connections)) is not None:
        parser.error(f"{options.connections} connections do not fit here: at most {room}")
    mine = next(setup for setup in SETUPS if setup.label == options.setup)
    floor = next(s for s in SETUPS if s.kind == "floor" and s.uvloop == mine.uvloop)
    ratios = []
    for round_ in range(1, options.rounds + 1):
        theirs = measure(floor, options.connections, FULL, False, print)
        ours = measure(mine, options.connections, FULL, False, print)
        ratio = statistics.median(window_ratios(ours, theirs))
        ratios.append(ratio)
        print(
            f"round {round_}: {ratio:.2f}x (CPU {ours['server_cpu']:.4f} against"
            f" {theirs['server_cpu']:.4f}; other CPU {ours['other_cpu']:.2f})",
            flush=True,
        )
    print(
        f"{mine.label} at {options.connections:,}: {min(ratios):.2f}-{max(ratios):.2f}x the"
        f" floor, median {statistics.median(ratios):.2f}x, {len(ratios)} rounds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
