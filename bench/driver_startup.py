"""How long each command takes to answer `--help` (its imports: what a bad flag or file also costs before its one
`error:` line), in this tree and, side by side, in another checkout of the project.

    .venv/bin/python bench/driver_startup.py [--old DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("search.run", "search.confirm", "search.export", "search.ui", "trainable.train")


def seconds(tree: Path, module: str, repeats: int) -> float:
    """Median wall time of `python -m module --help` run in `tree` (its modules shadow the installed ones)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tree, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if p.returncode != 0:
            sys.exit(f"{tree}: {module} --help failed:\n{p.stderr[-2000:]}")
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", type=Path, help="another checkout of the project to compare with")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    trees = {"this tree": ROOT} | ({"old": args.old.resolve()} if args.old else {})
    print(f"{'command':<18}" + "".join(f"{name:>12}" for name in trees))
    for module in COMMANDS:
        row = [seconds(tree, module, args.repeats) for tree in trees.values()]
        print(f"{module:<18}" + "".join(f"{t:>11.2f}s" for t in row), flush=True)


if __name__ == "__main__":
    main()
