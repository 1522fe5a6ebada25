"""Benchmark 1: cold conversion of the training set vs the cached load (targets: cached < 1 s, >= 90x faster).

    .venv/bin/python bench/dataset_readiness.py [--data ../shared/data/nuclei] [--repeats 3]

Each repeat converts into a fresh cache folder (cold), then loads from it several times (cached); both are timed in
the same run, and the median and spread are printed.
"""

import argparse
import logging
import statistics
import tempfile
import time

from trainable.data import load_train_records


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/nuclei")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cached-loads", type=int, default=5)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cold, cached = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()
            records, stats = load_train_records(args.data, cache)
            cold.append(time.perf_counter() - t0)
            assert len(stats.converted) == stats.images
            for _ in range(args.cached_loads):
                t0 = time.perf_counter()
                _, again = load_train_records(args.data, cache)
                cached.append(time.perf_counter() - t0)
                assert not again.converted
    print(f"dataset: {args.data}: {stats.images} images, {stats.instances} nuclei")
    print(
        f"cold conversion: median {statistics.median(cold):.2f} s (min {min(cold):.2f}, max {max(cold):.2f}; "
        f"{args.repeats} runs)"
    )
    print(
        f"cached load:     median {statistics.median(cached):.3f} s (min {min(cached):.3f}, max {max(cached):.3f}; "
        f"{len(cached)} loads)"
    )
    print(f"speed-up (median cold / median cached): {statistics.median(cold) / statistics.median(cached):.0f}x")


if __name__ == "__main__":
    main()
