"""Real Detectron2 training on small crops of the course data: a few iterations, R18-FPN from scratch."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SMALL_IDS
from trainable.train import Settings, run_trial

TINY = {
    "backbone": "R18-FPN",
    "weights": "scratch",
    "crop_size": 128,
    "warmup_epochs": 0,
    "decay_epochs": [1],
    "proposals_train": 200,
    "roi_batch_size": 64,
    "rpn_batch_size": 128,
    "proposals_test": 200,
    "detections_per_image": 150,
}


def _settings(data, cache) -> Settings:
    # 2 training images -> 2 iterations per epoch; validation on a 128 px crop of the third.
    split = {"val_ids": [SMALL_IDS[2]], "train_ids": SMALL_IDS[:2]}
    return Settings(data=str(data), split=split, eval_every=1, val_crop=128, cache_dir=str(cache))


class Recorder:
    def __init__(self, keep: Path):
        self.reports, self.keep = [], keep

    def __call__(self, metrics, ckpt):
        if ckpt is not None:
            dest = self.keep / f"iter{metrics['iteration']}"
            Path(ckpt).rename(dest)
            ckpt = dest
        self.reports.append((metrics, ckpt))


def test_two_epochs_report_and_resume(small_data, cache_dir, tmp_path):
    settings = _settings(small_data, cache_dir)
    rec = Recorder(tmp_path)
    summary = run_trial({**TINY, "epochs": 2}, settings, rec, tmp_path / "work")
    assert [m["iteration"] for m, _ in rec.reports] == [2, 4]
    assert [m["epoch"] for m, _ in rec.reports] == [1, 2]
    first, ckpt = rec.reports[0]
    for key in ("val_map50", "val_map", "total_loss", "loss_mask", "lr", "sec_per_iter", "val_seconds"):
        assert key in first, key
    assert "val_map50_all" not in first  # validation keeps the scorer's 100 detections: no uncapped metric
    assert 0.0 <= first["val_map50"] <= 1.0 and first["val_detections_per_image"] <= 100
    assert first["lr"] == pytest.approx(0.01) and rec.reports[1][0]["lr"] == pytest.approx(0.001)
    assert {"model.pth", "config.yaml", "state.json"} <= {p.name for p in ckpt.iterdir()}
    assert json.loads((ckpt / "state.json").read_text())["iteration"] == 2
    assert summary["failure_reason"] is None

    # Resume from the epoch-1 checkpoint: training continues at iteration 2 (0-based), with the decayed LR.
    resumed = Recorder(tmp_path / "resumed")
    resumed.keep.mkdir()
    summary = run_trial({**TINY, "epochs": 2}, settings, resumed, tmp_path / "work2", resume_from=ckpt)
    assert summary["start_iter"] == 2
    assert [m["iteration"] for m, _ in resumed.reports] == [4]
    assert resumed.reports[0][0]["lr"] == pytest.approx(0.001)


def test_nan_loss_ends_the_trial_with_a_reason(small_data, cache_dir, tmp_path):
    rec = Recorder(tmp_path)
    summary = run_trial({**TINY, "epochs": 3, "lr": 1e6}, _settings(small_data, cache_dir), rec, tmp_path / "w")
    assert "NaN/Inf" in summary["failure_reason"]
    last, ckpt = rec.reports[-1]
    assert last["diverged"] == 1 and last["val_map50"] == 0.0 and ckpt is None
    assert summary["end_iter"] < 6


def test_cli_bad_config_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "trial.yaml"
    bad.write_text("hparams: {backbone: R34-C4}\nsettings: {data: sample_data/nuclei}\n")
    p = subprocess.run(
        [sys.executable, "-m", "trainable.train", "--config", str(bad), "--out", str(tmp_path / "o")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        "error: backbone 'R34-C4': choose one of ['R101-C4', 'R101-FPN', 'R18-FPN', 'R50-C4', 'R50-FPN']"
    ]
    bad.write_text("hparams: {}\nsettings: {data: /nonexistent}\n")
    p = subprocess.run(
        [sys.executable, "-m", "trainable.train", "--config", str(bad)], cwd=ROOT, capture_output=True, text=True
    )
    assert p.returncode == 2 and p.stderr.strip() == "error: /nonexistent: dataset folder not found"


def test_capped_validation_gives_the_uncapped_runs_val_map50(pretrained, dup_data, cache_dir, tmp_path):
    """val_detections=100 (the default) must not change val_map50: the top 100 of 300 detections are the same."""
    from detectron2.config import get_cfg

    from trainable.train import NucleiTrainer, prepare_data

    settings = Settings(data=str(dup_data), split={"val_ids": ["copy"]}, cache_dir=str(cache_dir))
    cfg = get_cfg()
    cfg.merge_from_file(str(pretrained.parent / "config.yaml"))
    cfg.MODEL.WEIGHTS, cfg.OUTPUT_DIR = str(pretrained), str(tmp_path)
    trainer = NucleiTrainer(
        cfg,
        json.loads((pretrained.parent / "state.json").read_text())["hparams"],
        prepare_data(settings),
        report=lambda *a: None,
        eval_every=1,
        workdir=tmp_path,
        val_detections=300,
    )
    trainer.resume_or_load(resume=False)
    uncapped = trainer.validate()
    trainer.val_detections = 100
    capped = trainer.validate()
    assert uncapped["val_detections_per_image"] > 100 >= capped["val_detections_per_image"]
    assert uncapped["val_map50_all"] > capped["val_map50"] > 0.05
    assert capped["val_map50"] == pytest.approx(uncapped["val_map50"], abs=1e-9)
    assert capped["val_map"] == pytest.approx(uncapped["val_map"], abs=1e-9)
    assert trainer.model.roi_heads.box_predictor.test_topk_per_image == 300  # restored after validation
