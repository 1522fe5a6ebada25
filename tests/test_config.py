import pytest

from trainable.config import BACKBONES, ConfigError, build_cfg, schedule


def test_epochs_map_to_iterations_exactly():
    # The report: 24 images, batch 1, 120 epochs, 3 warm-up epochs, decays at 20/50/80/90.
    hp = {"epochs": 120, "warmup_epochs": 3, "decay_epochs": [90, 20, 50, 80], "batch_size": 1, "weights": "scratch"}
    cfg = build_cfg(hp, num_train_images=24)
    assert cfg.SOLVER.MAX_ITER == 2880
    assert cfg.SOLVER.WARMUP_ITERS == 72
    assert cfg.SOLVER.STEPS == (480, 1200, 1920, 2160)
    assert cfg.SOLVER.IMS_PER_BATCH == 1 and cfg.SOLVER.BASE_LR == 0.01


def test_repeated_decay_epochs_give_increasing_steps():
    # Detectron2's MultiStepParamScheduler refuses equal milestones; a hand-written [27, 27] must still train.
    hp = {"epochs": 40, "decay_epochs": [27, 27, 8], "batch_size": 1, "weights": "scratch"}
    assert build_cfg(hp, num_train_images=10).SOLVER.STEPS == (80, 270)


def test_batch_size_rounds_epochs_up():
    s = schedule({"epochs": 10, "warmup_epochs": 0.5, "decay_epochs": [5, 10, 12], "batch_size": 4}, 21)
    assert s == {"iters_per_epoch": 6, "max_iter": 60, "warmup_iters": 3, "steps": (30,)}


def test_dense_nuclei_settings():
    cfg = build_cfg({"backbone": "R50-FPN", "weights": "scratch"}, 20)
    assert cfg.TEST.DETECTIONS_PER_IMAGE >= 1862
    assert cfg.MODEL.ANCHOR_GENERATOR.SIZES[0] == [8]
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 1
    assert cfg.INPUT.MASK_FORMAT == "bitmask"
    c4 = build_cfg({"backbone": "R50-C4", "weights": "scratch"}, 20)
    assert c4.MODEL.ANCHOR_GENERATOR.SIZES == [[8, 16, 32, 64, 128]]


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_builds_a_config(backbone):
    cfg = build_cfg({"backbone": backbone, "weights": "scratch"}, 20)
    assert cfg.MODEL.RESNETS.NORM == "GN" and cfg.MODEL.BACKBONE.FREEZE_AT == 0 and cfg.MODEL.WEIGHTS == ""
    assert cfg.MODEL.RESNETS.DEPTH == int(backbone[1:].split("-")[0])


def test_weights_choices(tmp_path):
    cfg = build_cfg({"backbone": "R101-C4", "weights": "imagenet"}, 20)
    assert cfg.MODEL.WEIGHTS.endswith("R-101.pkl") and cfg.MODEL.RESNETS.NORM == "FrozenBN"
    assert build_cfg({"backbone": "R50-FPN", "weights": "coco"}, 20).MODEL.WEIGHTS.endswith(".pkl")
    f = tmp_path / "w.pth"
    f.write_bytes(b"x")
    assert build_cfg({"weights": str(f)}, 20).MODEL.WEIGHTS == str(f)
    with pytest.raises(ConfigError, match="weights file not found: .*missing.pth"):
        build_cfg({"weights": str(tmp_path / "missing.pth")}, 20)
    with pytest.raises(ConfigError, match="no ImageNet weights for R18-FPN"):
        build_cfg({"backbone": "R18-FPN", "weights": "imagenet"}, 20)


def test_bad_hyperparameters():
    with pytest.raises(ConfigError, match="backbone 'R34-C4'"):
        build_cfg({"backbone": "R34-C4"}, 20)
    with pytest.raises(ConfigError, match="unknown hyperparameter.*'learning_rate'"):
        build_cfg({"learning_rate": 0.1}, 20)
    with pytest.raises(ConfigError, match="lr must be a positive number"):
        build_cfg({"lr": 0}, 20)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        build_cfg({"epochs": 2, "warmup_epochs": 3}, 20)


def test_norm_follows_the_weights(tmp_path):
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(b"x")
    assert build_cfg({"weights": str(ckpt)}, 20).MODEL.RESNETS.NORM == "FrozenBN"
    (tmp_path / "config.yaml").write_text(build_cfg({"weights": "scratch"}, 20).dump())
    cfg = build_cfg({"weights": str(ckpt)}, 20)  # a checkpoint of ours: its own architecture
    assert cfg.MODEL.RESNETS.NORM == "GN" and cfg.MODEL.FPN.NORM == "GN" and cfg.MODEL.WEIGHTS == str(ckpt)
    assert build_cfg({"weights": "scratch", "norm": "GN"}, 20).MODEL.RESNETS.NORM == "GN"
    with pytest.raises(ConfigError, match="norm must be"):
        build_cfg({"norm": "BN"}, 20)
    # Combinations that can only fail in a trial are refused when the config is checked.
    with pytest.raises(ConfigError, match="norm GN does not fit weights imagenet"):
        build_cfg({"weights": "imagenet", "norm": "GN"}, 20)
    with pytest.raises(ConfigError, match="norm FrozenBN cannot train from scratch"):
        build_cfg({"weights": "scratch", "norm": "FrozenBN"}, 20)
