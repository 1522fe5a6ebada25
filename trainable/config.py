"""A trial's hyperparameters (a plain dict) -> Detectron2 CfgNode.

The schedule is given in epochs, as the course report did; one epoch = ceil(train images / batch size) iterations.
`lr` is the learning rate of one image per batch: with `batch_size` B, Detectron2's BASE_LR is B x lr (the linear
scaling rule, Goyal et al. 2017), so a space that searches the batch size compares schedules of equal reach.
"""

from __future__ import annotations

import logging
import math
import numbers
from pathlib import Path
from typing import TYPE_CHECKING

from trainable.cli import unknown_key

if TYPE_CHECKING:  # Detectron2 (and torch) load only where a config is built: the drivers check without them
    from detectron2.config import CfgNode

# Every hyperparameter a trial understands, with its default. Search spaces and trial files may set any of them.
DEFAULTS: dict = {
    "backbone": "R50-FPN",  # one of BACKBONES
    "weights": "imagenet",  # imagenet | coco | scratch | path to a .pth/.pkl file
    "norm": "auto",  # GN | FrozenBN | auto (GN for scratch, FrozenBN for model-zoo weights, a file's own config)
    "epochs": 120,
    "batch_size": 1,
    "lr": 0.01,  # per image of a batch: BASE_LR = batch_size x lr
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "warmup_epochs": 3.0,
    "warmup_factor": 0.001,
    "decay_epochs": [20, 50, 80, 90],  # epochs at which the LR is multiplied by gamma
    "gamma": 0.1,
    "lr_schedule": "step",  # step (decay_epochs, gamma) | cosine (Detectron2's WarmupCosineLR to 0; decays unused)
    "grad_clip": 0.0,  # clip gradient norm to this value; 0 = off
    # augmentation
    "crop_size": 500,  # random crop, pixels (clamped to the image)
    "hflip": 0.5,  # probability of a horizontal flip
    "vflip": 0.5,  # probability of a vertical flip
    "brightness": 0.2,  # random brightness factor in [1 - b, 1 + b]; 0 = off
    "rot90": 0.0,  # probability of a quarter turn (90, 180 or 270 degrees); 0.75: all four rotations equally likely
    "contrast": 0.0,  # random contrast factor in [1 - c, 1 + c]; 0 = off
    "stain": 0.0,  # HED jitter t: each stain s x U[1 - t, 1 + t] + U[-t, t] x its mean (trainable.colour); 0 = off
    "hue": 0.0,  # random hue shift in [-h, h] degrees (YIQ chroma rotation); 0 = off
    "saturation": 0.0,  # random saturation factor in [1 - s, 1 + s]; 0 = off
    # scale: tiles are resized by `scale` in training (crops of crop_size / scale px), validation and export alike
    "scale": 1.0,
    "scale_jitter": 0.0,  # training scale x U[1 - j, 1 + j]
    # dense small objects
    "anchor_size": 8,  # smallest anchor (pixels); FPN levels double it, C4 uses 5 sizes from it
    "anchor_aspect": 2.0,  # anchors of aspect ratios 1/a, 1 and a (height / width)
    "rpn_nms": 0.7,  # RPN's NMS IoU threshold
    "roi_nms": 0.5,  # the detections' NMS IoU threshold (test time)
    "roi_positive_fraction": 0.25,  # share of foreground RoIs in each image's roi_batch_size
    "mask_resolution": 14,  # RoI features of the FPN mask head (masks are twice that); C4 models: 14 only
    "rpn_batch_size": 512,
    "roi_batch_size": 512,
    "proposals_train": 2000,  # RPN post-NMS top-k per image in training
    "proposals_test": 3000,
    "detections_per_image": 2000,  # > the 1,862 nuclei of the densest course image
    "box_head_fc_dim": 1024,  # width of the box head's fully connected layer(s); smaller = lighter checkpoints
    "score_thresh_test": 0.05,
    "mask_rescore": False,  # score x mean mask probability inside the mask (trainable.rescore), validation and export
    "seed": 0,
}

BACKBONES: dict[str, str] = {
    "R50-C4": "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_3x.yaml",
    "R50-FPN": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
    "R101-C4": "COCO-InstanceSegmentation/mask_rcnn_R_101_C4_3x.yaml",
    "R101-FPN": "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml",
    # CPU-friendly: ResNet-18 (basic blocks) under the R50-FPN config. No model-zoo weights: scratch or a file.
    "R18-FPN": "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml",
}
IMAGENET_WEIGHTS = {
    50: "detectron2://ImageNetPretrained/MSRA/R-50.pkl",
    101: "detectron2://ImageNetPretrained/MSRA/R-101.pkl",
}


# Numeric levers and their ranges: [low, high], or (low, high] for those in POSITIVE (0 would switch them off).
RANGES = {
    "hflip": (0, 1),
    "vflip": (0, 1),
    "rot90": (0, 1),
    "brightness": (0, 1),
    "contrast": (0, 1),
    "stain": (0, 1),
    "saturation": (0, 1),
    "hue": (0, 180),
    "scale": (0, 4),
    "scale_jitter": (0, 0.9),
    "rpn_nms": (0, 1),
    "roi_nms": (0, 1),
    "roi_positive_fraction": (0, 1),
}
POSITIVE = {"scale", "rpn_nms", "roi_nms", "roi_positive_fraction"}
MASK_RESOLUTIONS = (7, 14, 28)
LR_SCHEDULES = {"step": "WarmupMultiStepLR", "cosine": "WarmupCosineLR"}


class ConfigError(ValueError):
    """A hyperparameter value that cannot make a model."""


def _real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_range(k: str, v) -> None:
    """A numeric lever inside its RANGES entry, or one ConfigError."""
    low, high = RANGES[k]
    if not (_real(v) and (low < v if k in POSITIVE else low <= v) and v <= high):
        raise ConfigError(f"{k} must be in {'(' if k in POSITIVE else '['}{low}, {high}], got {v!r}")


def check_flag(k: str, v) -> None:
    if not isinstance(v, bool):
        raise ConfigError(f"{k} must be true or false, got {v!r}")


# Names other tools give hyperparameters of DEFAULTS: an unknown name close to one of them suggests ours.
ALIASES = {"learning_rate": "lr", "base_lr": "lr", "max_epochs": "epochs", "num_epochs": "epochs", "wd": "weight_decay"}
HPARAMS_DOC = "see spaces/README.md for the list"  # where an unknown hyperparameter's message sends the user


def with_defaults(hp: dict) -> dict:
    unknown = set(hp) - set(DEFAULTS)
    if unknown:
        raise ConfigError(unknown_key("hyperparameter", unknown, DEFAULTS, HPARAMS_DOC, ALIASES))
    return {**DEFAULTS, **hp}


def iters_per_epoch(num_train_images: int, batch_size: int) -> int:
    return math.ceil(num_train_images / batch_size)


def schedule(hp: dict, num_train_images: int) -> dict:
    """Epoch-based schedule -> iterations: max_iter, warmup_iters, steps."""
    ipe = iters_per_epoch(num_train_images, int(hp["batch_size"]))
    max_iter = int(round(hp["epochs"] * ipe))
    steps = sorted({int(round(e * ipe)) for e in hp["decay_epochs"]})  # two decays at one step are one
    return {
        "iters_per_epoch": ipe,
        "max_iter": max_iter,
        "warmup_iters": int(round(hp["warmup_epochs"] * ipe)),
        "steps": tuple(s for s in steps if 0 < s < max_iter),
    }


def _check(hp: dict) -> None:
    if hp["backbone"] not in BACKBONES:
        raise ConfigError(f"backbone {hp['backbone']!r}: choose one of {sorted(BACKBONES)}")
    positive = ("epochs", "batch_size", "lr", "crop_size", "detections_per_image", "anchor_size")
    for k in positive:
        if not (isinstance(hp[k], (int, float)) and hp[k] > 0):
            raise ConfigError(f"{k} must be a positive number, got {hp[k]!r}")
    for k in ("batch_size", "seed"):
        if isinstance(hp[k], bool) or not isinstance(hp[k], numbers.Integral) or hp[k] < 0:
            raise ConfigError(f"{k} must be a whole number, got {hp[k]!r}")
    for k in RANGES:
        check_range(k, hp[k])
    if not (_real(hp["anchor_aspect"]) and hp["anchor_aspect"] >= 1):
        raise ConfigError(f"anchor_aspect must be a number >= 1, got {hp['anchor_aspect']!r}")
    if hp["mask_resolution"] not in MASK_RESOLUTIONS:
        raise ConfigError(f"mask_resolution must be one of {list(MASK_RESOLUTIONS)}, got {hp['mask_resolution']!r}")
    if hp["mask_resolution"] != 14 and not hp["backbone"].endswith("FPN"):
        raise ConfigError(
            f"mask_resolution {hp['mask_resolution']} needs an FPN backbone: {hp['backbone']} pools once for both "
            "heads (14), and more would run its res5 head on 4x the pixels of every RoI"
        )
    if hp["lr_schedule"] not in LR_SCHEDULES:
        raise ConfigError(f"lr_schedule must be one of {list(LR_SCHEDULES)}, got {hp['lr_schedule']!r}")
    check_flag("mask_rescore", hp["mask_rescore"])
    if hp["norm"] not in ("auto", "GN", "FrozenBN"):
        raise ConfigError(f"norm must be auto, GN or FrozenBN, got {hp['norm']!r}")
    if hp["norm"] == "GN" and hp["weights"] in ("imagenet", "coco"):
        raise ConfigError(
            f"norm GN does not fit weights {hp['weights']}: the model zoo's backbones carry BatchNorm statistics "
            "(FrozenBN); use norm auto or FrozenBN, or weights scratch"
        )
    if hp["norm"] == "FrozenBN" and hp["weights"] == "scratch":
        raise ConfigError(
            "norm FrozenBN cannot train from scratch (its frozen statistics are random: the loss diverges within "
            "iterations); use norm auto or GN"
        )
    if not 0 <= hp["warmup_epochs"] <= hp["epochs"]:
        raise ConfigError(f"warmup_epochs must be in [0, epochs], got {hp['warmup_epochs']!r}")
    if not isinstance(hp["decay_epochs"], (list, tuple)):
        raise ConfigError(f"decay_epochs must be a list of epochs, got {hp['decay_epochs']!r}")


def merge_safely(cfg: CfgNode, path: str | Path) -> None:
    """cfg.merge_from_file without its fallback to yaml.unsafe_load, which runs a file's Python tags: a tag is a
    yaml.YAMLError here."""
    from detectron2.config import CfgNode

    cfg.merge_from_other_cfg(CfgNode(CfgNode.load_yaml_with_base(str(path), allow_unsafe=False)))


def resolve_weights(weights: str, backbone: str) -> str:
    """The MODEL.WEIGHTS value for a `weights` choice ('' for scratch); a local path must exist."""
    depth = int(backbone[1:].split("-")[0])
    if weights == "scratch":
        return ""
    if weights == "imagenet":
        if depth not in IMAGENET_WEIGHTS:
            raise ConfigError(f"no ImageNet weights for {backbone} in the model zoo: use weights: scratch or a file")
        return IMAGENET_WEIGHTS[depth]
    if weights == "coco":
        if backbone == "R18-FPN":
            raise ConfigError("no COCO Mask R-CNN checkpoint for R18-FPN: use weights: scratch or a file")
        from detectron2 import model_zoo

        return model_zoo.get_checkpoint_url(BACKBONES[backbone])
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"weights file not found: {path} (or use imagenet | coco | scratch)")
    if path.suffix == ".pkl":
        logging.getLogger("nucleitune").warning(
            "weights %s: Detectron2 unpickles .pkl files, which can run code: load only files you trust", path
        )
    return str(path.resolve())


def _norm(hp: dict) -> str:
    """The normalization the model is built with; weights from a file of ours carry their config.yaml beside them."""
    if hp["norm"] != "auto":
        return hp["norm"]
    if hp["weights"] == "scratch":
        return "GN"
    beside = Path(str(hp["weights"])).expanduser().parent / "config.yaml"
    if hp["weights"] not in ("imagenet", "coco") and beside.is_file():
        from detectron2.config import CfgNode

        saved = CfgNode.load_yaml_with_base(str(beside), allow_unsafe=False)
        return saved.get("MODEL", {}).get("RESNETS", {}).get("NORM", "FrozenBN")
    return "FrozenBN"


# Hyperparameters that act only in some trials: what decides whether they do.
CONDITIONAL = {"decay_epochs": "lr_schedule", "gamma": "lr_schedule", "mask_resolution": "backbone"}


def acts(name: str, hp: dict) -> bool:
    """Whether hyperparameter `name` changes a trial with these hyperparameters: decays and gamma only under the step
    schedule (a cosine one has no steps), mask_resolution only for FPN backbones (C4 heads share one pooling, 14).
    The searcher draws a conditional parameter only where it acts; what is recorded is what acts (as_run)."""
    if name in ("decay_epochs", "gamma"):
        return hp["lr_schedule"] == "step"
    if name == "mask_resolution":
        return str(hp["backbone"]).endswith("FPN")
    return True


def as_run(hp: dict, searched=()) -> dict:
    """The hyperparameters as they act, for recording: decays and gamma under a cosine schedule are reset (no decays,
    gamma's default), and so is a searched mask resolution that a C4 model drew (a fixed one stays, for validate to
    refuse)."""
    hp = dict(hp)
    if not acts("decay_epochs", hp):
        hp["decay_epochs"], hp["gamma"] = [], DEFAULTS["gamma"]
    if "mask_resolution" in searched and not acts("mask_resolution", hp):
        hp["mask_resolution"] = DEFAULTS["mask_resolution"]
    return hp


class Hyperparameters(dict):
    """A trial's hyperparameters as `validate` returns them: defaults filled in and checked, once."""


def validate(hp: dict) -> Hyperparameters:
    """Hyperparameters with defaults filled in, checked (cheap: call before loading data or models); ones already
    validated are returned as they are."""
    if isinstance(hp, Hyperparameters):
        return hp
    hp = with_defaults(hp)
    _check(hp)
    resolve_weights(str(hp["weights"]), hp["backbone"])
    return Hyperparameters(hp)


def build_cfg(
    hp: dict,
    num_train_images: int,
    output_dir: str | Path = ".",
    device: str = "cpu",
    num_workers: int = 0,
    amp: bool = False,
) -> CfgNode:
    """The Detectron2 config of one trial (`num_workers` loader processes; `amp`: Detectron2's AMPTrainer); `hp` is
    validated unless it is already."""
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    hp = validate(hp)
    backbone = hp["backbone"]
    cfg = get_cfg()
    merge_safely(cfg, model_zoo.get_config_file(BACKBONES[backbone]))
    fpn = backbone.endswith("FPN")

    cfg.MODEL.DEVICE = device
    cfg.MODEL.WEIGHTS = resolve_weights(str(hp["weights"]), backbone)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 1
    depth = int(backbone[1:].split("-")[0])
    cfg.MODEL.RESNETS.DEPTH = depth
    if depth < 50:
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    if _norm(hp) == "GN":
        # FrozenBN cannot train from random init (diverges within iterations): GroupNorm everywhere, nothing frozen,
        # as in Detectron2's Misc/scratch_mask_rcnn_R_50_FPN_3x_gn.yaml.
        cfg.MODEL.RESNETS.NORM = "GN"
        cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
        cfg.MODEL.BACKBONE.FREEZE_AT = 0
        cfg.MODEL.PIXEL_STD = [57.375, 57.120, 58.395]
        cfg.MODEL.ROI_MASK_HEAD.NORM = "GN"
        if fpn:
            cfg.MODEL.FPN.NORM = "GN"
            cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
            cfg.MODEL.ROI_BOX_HEAD.NUM_CONV = 4
            cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 1
            cfg.MODEL.ROI_BOX_HEAD.NORM = "GN"

    # Small, dense objects: nuclei are ~4-70 px across and up to 1,862 per 1000x1000 tile.
    a = int(hp["anchor_size"])
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[a * 2**i] for i in range(5)] if fpn else [[a * 2**i for i in range(5)]]
    r = float(hp["anchor_aspect"])
    cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[1 / r, 1.0, r]] if r != 1 else [[1.0]]
    cfg.MODEL.RPN.NMS_THRESH = float(hp["rpn_nms"])
    cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST = float(hp["roi_nms"])
    cfg.MODEL.ROI_HEADS.POSITIVE_FRACTION = float(hp["roi_positive_fraction"])
    cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = int(hp["mask_resolution"])  # C4 pools with the box head's (14)
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = int(hp["rpn_batch_size"])
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = int(hp["proposals_train"])
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2 * int(hp["proposals_train"])
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = int(hp["proposals_test"])
    cfg.MODEL.RPN.PRE_NMS_TOPK_TEST = 2 * int(hp["proposals_test"])
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = int(hp["roi_batch_size"])
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = int(hp["box_head_fc_dim"])
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(hp["score_thresh_test"])
    cfg.TEST.DETECTIONS_PER_IMAGE = int(hp["detections_per_image"])

    # Images are used at native scale (tiny nuclei); augmentation is done by trainable.augment.
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.INPUT.MIN_SIZE_TRAIN = (0,)
    cfg.INPUT.MIN_SIZE_TEST = 0
    cfg.INPUT.CROP.ENABLED = False
    cfg.DATASETS.TRAIN = ("nuclei_train",)
    cfg.DATASETS.TEST = ("nuclei_val",)
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True

    sched = schedule(hp, num_train_images)
    cfg.SOLVER.IMS_PER_BATCH = int(hp["batch_size"])
    cfg.SOLVER.BASE_LR = float(hp["lr"]) * int(hp["batch_size"])
    cfg.SOLVER.AMP.ENABLED = amp
    cfg.DATALOADER.NUM_WORKERS = int(num_workers)
    cfg.SOLVER.MOMENTUM = float(hp["momentum"])
    cfg.SOLVER.WEIGHT_DECAY = float(hp["weight_decay"])
    cfg.SOLVER.MAX_ITER = sched["max_iter"]
    cfg.SOLVER.WARMUP_ITERS = sched["warmup_iters"]
    cfg.SOLVER.WARMUP_FACTOR = float(hp["warmup_factor"]) if sched["warmup_iters"] else 1.0
    cfg.SOLVER.WARMUP_METHOD = "linear"
    cfg.SOLVER.LR_SCHEDULER_NAME = LR_SCHEDULES[hp["lr_schedule"]]
    cfg.SOLVER.STEPS = sched["steps"] if hp["lr_schedule"] == "step" else ()
    cfg.SOLVER.GAMMA = float(hp["gamma"])
    cfg.SOLVER.CHECKPOINT_PERIOD = 10**9  # checkpoints are written by the reporting hook, once per evaluation
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = hp["grad_clip"] > 0
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = float(hp["grad_clip"]) or 1.0
    cfg.TEST.EVAL_PERIOD = 0  # evaluation is driven by the reporting hook
    cfg.SEED = int(hp["seed"])
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.freeze()
    return cfg
