"""Real Detectron2 training on small crops of the course data: a few iterations, R18-FPN from scratch."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, SMALL_IDS
from trainable.config import ConfigError
from trainable.settings import Settings
from trainable.train import run_trial

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


def test_two_epochs_report_and_resume(small_data, cache_dir, tmp_path, caplog):
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
    assert {"model.pth", "trainer.pth", "config.yaml", "state.json"} <= {p.name for p in ckpt.iterdir()}
    assert set(torch.load(ckpt / "model.pth", weights_only=True)) == {"model"}  # weights only; the rest beside
    assert json.loads((ckpt / "state.json").read_text())["iteration"] == 2
    assert summary["failure_reason"] is None
    # The trial score lives in the trainer's state (BestScoreHook's), saved in trainer.pth and restored from there.
    trainer_state = torch.load(ckpt / "trainer.pth", weights_only=True)["trainer"]
    assert trainer_state["hooks"]["BestScoreHook"] == {"best": first["val_map50_best"]}
    planted = tmp_path / "planted"
    shutil.copytree(ckpt, planted)
    trainer_state["hooks"]["BestScoreHook"] = {"best": 0.99}  # higher than any tiny model scores
    torch.save({"trainer": trainer_state}, planted / "trainer.pth")
    carried = Recorder(tmp_path / "carried")
    carried.keep.mkdir()
    run_trial({**TINY, "epochs": 2}, settings, carried, tmp_path / "w4", resume_from=planted)
    assert carried.reports[0][0]["val_map50_best"] == 0.99  # from trainer.pth, not re-read from state.json

    # A checkpoint whose training state was stripped (a best one, or one a killed driver resumes from) still resumes:
    # its weights, with a warning, a fresh optimizer and the LR schedule at its iteration; it trains to its end.
    weights_only = tmp_path / "weights-only"
    shutil.copytree(ckpt, weights_only)
    (weights_only / "trainer.pth").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nucleitune"):
        again = Recorder(tmp_path / "again")
        again.keep.mkdir()
        summary = run_trial({**TINY, "epochs": 2}, settings, again, tmp_path / "w3", resume_from=weights_only)
    assert any("no trainer.pth" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert summary["start_iter"] == 2 and summary["max_iter"] == 4 and summary["failure_reason"] is None
    assert [m["iteration"] for m, _ in again.reports] == [4]  # the last iteration: trained to its end
    assert again.reports[0][0]["lr"] == pytest.approx(0.001)  # the schedule positioned past its decay at epoch 1

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
        f"error: {bad}: backbone 'R34-C4': choose one of ['R101-C4', 'R101-FPN', 'R18-FPN', 'R50-C4', 'R50-FPN']"
    ]
    bad.write_text("hparams: {}\nsettings: {data: /nonexistent}\n")
    p = subprocess.run(
        [sys.executable, "-m", "trainable.train", "--config", str(bad)], cwd=ROOT, capture_output=True, text=True
    )
    assert p.returncode == 2 and p.stderr.strip() == "error: /nonexistent: dataset folder not found"


@pytest.mark.parametrize("rescoring", [False, True])
def test_capped_validation_gives_the_uncapped_runs_val_map50(pretrained, dup_data, cache_dir, tmp_path, rescoring):
    """val_detections=100 (the default) must not change val_map50: the top 100 of 300 detections are the same. With
    mask rescoring too: the pool it reorders is the model's, whatever validation keeps (rescore.Ranking)."""
    from detectron2.config import get_cfg

    from trainable.train import NucleiTrainer, prepare_data

    settings = Settings(data=str(dup_data), split={"val_ids": ["copy"]}, cache_dir=str(cache_dir))
    cfg = get_cfg()
    cfg.merge_from_file(str(pretrained.parent / "config.yaml"))
    cfg.MODEL.WEIGHTS, cfg.OUTPUT_DIR = str(pretrained), str(tmp_path)
    hp = json.loads((pretrained.parent / "state.json").read_text())["hparams"]
    trainer = NucleiTrainer(
        cfg,
        {**hp, "mask_rescore": rescoring},
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
    # The nuclei measures come with uncapped validation only (100 detections would measure the cap).
    from trainable.metrics import MEASURE_KEYS

    assert set(MEASURE_KEYS) <= set(uncapped) and not set(MEASURE_KEYS) & set(capped)
    assert uncapped["val_pq"] == pytest.approx(uncapped["val_f1"] * uncapped["val_sq"])  # one tile: PQ = F1 x SQ
    assert 0 < uncapped["val_pq"] <= uncapped["val_f1"] <= 1
    assert 0 < uncapped["val_aji"] < 1 and 0 < uncapped["val_dice"] <= 1


# ---------------------------------------------------------------------------------------------------------------
# Seeds, loader workers, batch size, mixed precision, checkpoints


def _runs(hp: dict, settings: Settings, seeds: tuple, tmp_path: Path) -> list[list[dict]]:
    """One trial per seed: the losses, val_map50 and lr of each of its reports."""
    keys = ("total_loss", "loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc", "val_map50", "lr")
    runs = []
    for i, seed in enumerate(seeds):
        rec = Recorder(tmp_path / f"r{i}")
        rec.keep.mkdir()
        run_trial({**hp, "seed": seed}, settings, rec, tmp_path / f"w{i}")
        runs.append([{k: m[k] for k in keys} for m, _ in rec.reports])
    return runs


def test_same_seed_same_trial_other_seed_other_trial(small_data, cache_dir, tmp_path):
    """From scratch, with augmentation in a loader worker: model init, sampler, augmentations and ROI sampling."""
    settings = _settings(small_data, cache_dir)
    settings.num_workers = 1
    hp = {**TINY, "epochs": 2, "hflip": 0.5, "vflip": 0.5, "brightness": 0.2}
    runs = _runs(hp, settings, (0, 0, 1), tmp_path)
    assert len(runs[0]) == 2
    for a, b in zip(runs[0], runs[1], strict=True):
        assert a == pytest.approx(b, abs=1e-6, rel=0)
    assert [r["total_loss"] for r in runs[0]] != pytest.approx([r["total_loss"] for r in runs[2]], abs=1e-6, rel=0)


def test_same_seed_same_val_map50_from_pretrained_weights(pretrained, dup_data, cache_dir, tmp_path):
    from tests.conftest import CPU_HEADS

    settings = Settings(data=str(dup_data), split={"val_ids": ["copy"]}, eval_every=1, cache_dir=str(cache_dir))
    hp = {
        "backbone": "R18-FPN",
        "weights": str(pretrained),
        "epochs": 1,
        "lr": 1e-3,
        "warmup_epochs": 0,
        "decay_epochs": [],
        "crop_size": 256,
        **CPU_HEADS,
    }
    runs = _runs(hp, settings, (3, 3, 4), tmp_path)
    assert len(runs[0]) == 1 and runs[0][0]["val_map50"] > 0.05
    assert runs[0][0] == pytest.approx(runs[1][0], abs=1e-6, rel=0)
    assert runs[0][0] != pytest.approx(runs[2][0], abs=1e-6, rel=0)


def _torch_loader(loader):
    """The torch DataLoader inside Detectron2's wrappers (AspectRatioGroupedDataset, MapDataset)."""
    import torch.utils.data

    while not isinstance(loader, torch.utils.data.DataLoader):
        loader = loader.dataset
    return loader


def test_num_workers_and_batch_size_reach_the_loader_and_the_solver(small_data, cache_dir, tmp_path):
    from trainable.config import build_cfg, with_defaults
    from trainable.train import NucleiTrainer, prepare_data

    settings = _settings(small_data, cache_dir)
    data = prepare_data(settings)
    hp = {**TINY, "epochs": 2, "batch_size": 2, "lr": 0.004}
    cfg = build_cfg(hp, len(data.train), output_dir=tmp_path, num_workers=2)
    trainer = NucleiTrainer(cfg, with_defaults(hp), data, report=lambda *a: None, eval_every=1, workdir=tmp_path)
    assert _torch_loader(trainer.data_loader).num_workers == 2
    batch = next(iter(trainer.data_loader))
    assert len(batch) == 2 and all(tuple(b["image"].shape[1:]) == (128, 128) for b in batch)
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.008)  # linear scaling: lr is per image of a batch

    # And a real trial at batch size 2 (one iteration per epoch): reports, LR scaled, no failure.
    settings.num_workers = 1
    rec = Recorder(tmp_path)
    summary = run_trial(hp, settings, rec, tmp_path / "work")
    assert summary["failure_reason"] is None and summary["max_iter"] == 2
    assert [m["iteration"] for m, _ in rec.reports] == [1, 2]
    assert rec.reports[0][0]["lr"] == pytest.approx(0.008)


def test_amp_on_cpu_is_off_by_default_and_refused_when_asked(small_data, cache_dir, tmp_path):
    settings = _settings(small_data, cache_dir)
    assert settings.amp == "auto" and settings.amp_dtype("cpu") is None
    for amp in ("fp16", "bf16"):
        settings.amp = amp
        with pytest.raises(ConfigError, match=f"amp: {amp} needs a CUDA device"):
            run_trial({**TINY, "epochs": 1}, settings, Recorder(tmp_path), tmp_path / "w")
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())  # refused before any work
    with pytest.raises(ConfigError, match="amp must be one of"):
        Settings.from_dict({"data": "x", "amp": "fp8"})
    assert Settings.from_dict({"data": "x", "amp": False}).amp == "off"  # YAML's `amp: off`


def test_a_trial_reserving_no_gpu_runs_on_the_cpu_with_amp_off_where_cuda_is_visible(monkeypatch, tmp_path):
    """Ray does not hide GPUs from a trial that reserves none: the reservation, not torch, decides the device."""
    from trainable.settings import trial_device

    for reserved in (0, 0.0):
        assert trial_device("auto", reserved, cuda_available=True) == "cpu"
        assert trial_device("cpu", reserved, cuda_available=True) == "cpu"
        with pytest.raises(ConfigError, match="device: cuda, but the trial reserves no GPU"):
            trial_device("cuda", reserved, cuda_available=True)
    for reserved in (0.5, 1.0):
        assert trial_device("auto", reserved, cuda_available=True) == "cuda"
        assert trial_device("cpu", reserved, cuda_available=True) == "cpu"
    # Outside Ray (python -m trainable.train): auto is CUDA where torch sees it.
    assert trial_device("auto", None, cuda_available=True) == "cuda"
    assert trial_device("auto", None, cuda_available=False) == "cpu"
    assert trial_device("cuda", None, cuda_available=True) == "cuda"

    # Where CUDA is reported available (a GPU workstation, a GPU node), a trial reserving 0 GPUs: CPU, AMP off, and
    # no CUDA switch (cuDNN autotuning) touched.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    settings = Settings(data="x")
    assert settings.device == "auto" and settings.amp == "auto" and settings.cudnn_benchmark
    assert settings.resolved_device() == "cuda" and settings.amp_dtype("cuda") == torch.bfloat16  # outside Ray
    device = settings.resolved_device(reserved_gpus=0.0)
    assert device == "cpu" and settings.amp_dtype(device) is None
    settings.configure_torch(device)
    assert torch.backends.cudnn.benchmark is False

    # run_trial takes the reservation: with 0 GPUs, fp16/bf16 (CUDA only) and device: cuda are refused before any work.
    settings.amp = "bf16"
    with pytest.raises(ConfigError, match="amp: bf16 needs a CUDA device"):
        run_trial({**TINY, "epochs": 1}, settings, Recorder(tmp_path), tmp_path / "w", reserved_gpus=0.0)
    settings.amp, settings.device = "auto", "cuda"
    with pytest.raises(ConfigError, match="reserves no GPU"):
        run_trial({**TINY, "epochs": 1}, settings, Recorder(tmp_path), tmp_path / "w", reserved_gpus=0.0)
    assert not (tmp_path / "w").exists()


def test_a_ray_trial_reserving_no_gpu_trains_on_the_cpu_where_cuda_is_visible(monkeypatch, tmp_path):
    """tune_trial takes the reservation from Ray's runtime context (a 0-GPU trial's assigned resources have no GPU,
    and Ray leaves CUDA_VISIBLE_DEVICES alone): run_trial's device, AMP and torch switches follow it."""
    from types import SimpleNamespace

    import ray
    from ray import tune

    import trainable.train as train

    class Stop(Exception):
        pass

    seen = []

    def configure_torch(self, device):  # run_trial's last step before any work: what would it switch on?
        seen.append((device, self.amp_dtype(device)))
        raise Stop

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(Settings, "configure_torch", configure_torch)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(train, "_setup_logging", lambda *a: None)
    for assigned in ({"CPU": 2.0}, {"CPU": 2.0, "GPU": 0.5}):
        context = SimpleNamespace(get_node_id=lambda: "node", get_assigned_resources=lambda a=assigned: dict(a))
        monkeypatch.setattr(ray, "get_runtime_context", lambda c=context: c)
        with pytest.raises(Stop):
            train.tune_trial(dict(TINY), {"data": str(tmp_path)})
    assert seen == [("cpu", None), ("cuda", torch.bfloat16)]


def test_local_reporter_keeps_trainer_state_in_the_latest_checkpoint_only(tmp_path):
    from trainable.checkpoints import TRAINER_STATE
    from trainable.train import LocalReporter

    reporter = LocalReporter(tmp_path / "out")
    for epoch, value in ((1, 0.5), (2, 0.2), (3, 0.3)):
        d = tmp_path / f"c{epoch}"
        d.mkdir()
        for name in ("model.pth", TRAINER_STATE):
            (d / name).write_bytes(b"x")
        (d / "state.json").write_text(json.dumps({"epoch": epoch, "metrics": {"val_map50": value}}))
        reporter({"epoch": epoch, "val_map50": value}, str(d))
    ckpts = tmp_path / "out" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["epoch_0001", "epoch_0003"]  # best and latest
    assert (ckpts / "epoch_0003" / TRAINER_STATE).is_file() and (ckpts / "epoch_0001" / "model.pth").is_file()
    assert not (ckpts / "epoch_0001" / TRAINER_STATE).exists()
