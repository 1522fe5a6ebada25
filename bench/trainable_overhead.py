"""Benchmark 2: seconds per training iteration inside a Ray Tune trial (reporting, checkpoints and MLflow on,
validation excluded) vs a plain Detectron2 loop (SimpleTrainer + LR scheduler) on the same cfg, data and iterations.
Target: ratio <= 1.05.

    .venv/bin/python bench/trainable_overhead.py [--epochs 5] [--repeats 3] [--eval-every 1]

Both sides run the smoke space's model (R18-FPN from scratch, 192 px crops, bundled sample: 4 iterations per epoch)
with 2 torch threads, alternately. Both are timed from the trial's first report (end of epoch `eval_every`) to the
end of the last epoch (the time before holds lazy initialisation on both sides). In the trial, each report's own
time minus its validation time is training + checkpoint + report; the plain loop has no checkpoint, no report and no
validation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bench_space(folder: Path, epochs: int, eval_every: int) -> Path:
    doc = yaml.safe_load((ROOT / "spaces" / "smoke.yaml").read_text())
    doc.update(name="overhead", searcher="random", scheduler="fifo", num_samples=1, max_concurrent=1)
    doc["resources"] = {"cpu": 2, "gpu": 0}
    doc["settings"].update(data=str(ROOT / "sample_data" / "nuclei"), eval_every=eval_every)
    doc["fixed"].update(epochs=epochs, lr=0.01, warmup_epochs=1.0, decay_epochs=[epochs - 1], brightness=0.2)
    doc["params"] = {"hflip": {"choice": [0.5]}}
    doc.pop("points_to_evaluate", None)
    path = folder / "space-bench.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def tune_side(space: Path, folder: Path, name: str) -> dict:
    """One real sweep of one trial (MLflow on, SQLite); s/iteration from its reports after the first."""
    from search.sweep import Sweep, reports

    cmd = [sys.executable, "-m", "search.run", "--space", str(space), "--results", str(folder), "--name", name]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    (trial,) = Sweep(folder / name).trial_dirs()
    rows = reports(trial)
    later = rows[1:]
    iters = later[-1]["iteration"] - rows[0]["iteration"]
    train = sum(r["time_this_iter_s"] - r["val_seconds"] for r in later)
    return {
        "s_per_iter": train / iters,
        "iterations": iters,
        "timer_s_per_iter": statistics.median(r["sec_per_iter"] for r in later),
    }


def plain_side(space_path: Path, workdir: Path, from_epoch: int = 1) -> dict:
    """Detectron2's SimpleTrainer on the trial's own cfg, data loader and mapper; no hooks but the LR scheduler."""
    import torch
    from detectron2.engine import HookBase, SimpleTrainer, hooks
    from detectron2.modeling import build_model
    from detectron2.solver import build_lr_scheduler, build_optimizer

    from search.space import load_space
    from trainable.config import build_cfg, schedule, validate
    from trainable.train import Settings, prepare_data, train_loader

    torch.set_num_threads(2)  # what Ray gives a trial with 2 CPUs (OMP_NUM_THREADS)
    space = load_space(space_path)
    hp = validate(space.hparams({"hflip": 0.5}))
    settings = Settings.from_dict({**space.settings, "data": str(ROOT / "sample_data" / "nuclei")})
    data = prepare_data(settings)
    cfg = build_cfg(hp, len(data.train), output_dir=workdir, device="cpu")
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    loader = train_loader(cfg, hp, data.train)
    trainer = SimpleTrainer(model, loader, optimizer)
    ends: list[float] = []

    class Clock(HookBase):
        def after_step(self):
            ends.append(time.perf_counter())

    trainer.register_hooks([hooks.LRScheduler(optimizer, build_lr_scheduler(cfg, optimizer)), Clock()])
    trainer.train(0, cfg.SOLVER.MAX_ITER)
    start = schedule(hp, len(data.train))["iters_per_epoch"] * from_epoch
    iters = len(ends) - start
    return {"s_per_iter": (ends[-1] - ends[start - 1]) / iters, "iterations": iters}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    plain, tune, ratios = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        space = bench_space(Path(tmp), args.epochs, args.eval_every)
        for i in range(args.repeats):
            # The plain loop runs in a subprocess too, so both sides start cold and share nothing.
            code = (
                f"import json, sys; sys.path.insert(0, {str(ROOT)!r}); from bench.trainable_overhead import plain_side;"
                f"from pathlib import Path; print(json.dumps(plain_side(Path({str(space)!r}), Path({tmp!r}), "
                f"{args.eval_every})))"
            )
            out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
            assert out.returncode == 0, out.stderr[-2000:]
            pl = json.loads(out.stdout.strip().splitlines()[-1])
            tu = tune_side(space, Path(tmp) / "results", f"r{i}")
            plain.append(pl["s_per_iter"])
            tune.append(tu["s_per_iter"])
            ratios.append(tu["s_per_iter"] / pl["s_per_iter"])
            print(
                f"repeat {i + 1}: plain {pl['s_per_iter']:.3f} s/iter ({pl['iterations']} iterations), "
                f"tune {tu['s_per_iter']:.3f} s/iter ({tu['iterations']} iterations; Detectron2's timer inside the "
                f"trial {tu['timer_s_per_iter']:.3f}), ratio {ratios[-1]:.3f}",
                flush=True,
            )
    print(
        f"plain Detectron2: median {statistics.median(plain):.3f} s/iter (min {min(plain):.3f}, max {max(plain):.3f})\n"
        f"Ray Tune trial:   median {statistics.median(tune):.3f} s/iter (min {min(tune):.3f}, max {max(tune):.3f})\n"
        f"ratio tune/plain: median {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}; "
        f"{args.repeats} repeats, reports every {args.eval_every} epoch(s) of 4 iterations)"
    )


if __name__ == "__main__":
    main()
