"""`Settings`: everything about a trial that is not a hyperparameter, and the device rule of a trial.

Light to import (no torch, no Detectron2 at import time): the drivers read and check settings without them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trainable.cli import unknown_key
from trainable.config import ConfigError
from trainable.data import Split
from trainable.metrics import STEPS

if TYPE_CHECKING:
    import torch


@dataclass
class Settings:
    """Everything about a trial that is not a hyperparameter: where the data is and how it is used."""

    data: str
    split: dict = field(default_factory=lambda: {"val": 4})
    eval_every: int = 1  # epochs between validation passes (the last epoch is always evaluated)
    val_crop: int | None = None  # evaluate on a centre crop of each validation tile (fast CPU runs); None = full
    # Detections kept per validation image. 100 is the course scorer's cap: val_map50 is exact and validation is cheap
    # (the model pastes and encodes 100 full-tile masks, not 2000). Above 100, val_map50_all (uncapped) and the nuclei
    # measures (val_f1, val_pq, val_aji, ...: trainable.measures) are reported too.
    val_detections: int = 100
    cache_dir: str | None = None  # annotation cache (default ~/.cache/nucleitune or $NUCLEITUNE_CACHE)
    # Data-loader processes beside the trial's own. None: a sweep gives each trial its CPUs minus one (the trial's
    # process is busy too), a trial run alone 0.
    num_workers: int | None = None
    device: str = "auto"  # auto | cpu | cuda
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    # CUDA only (on CPU, "auto" is off and fp16/bf16 are refused: Detectron2's AMPTrainer needs CUDA).
    amp: str = "auto"  # mixed precision: auto (bf16 where the GPU has it, else fp16) | off | fp16 | bf16
    cudnn_benchmark: bool = True  # cuDNN times its kernels once per input shape (training crops have one shape)
    tf32: bool = True  # TF32 matmuls and convolutions on Ampere and newer GPUs
    deterministic: bool = False  # deterministic CUDA kernels where torch has them (slower; docs/reproducibility.md)
    # Progress steps (thousandths of the schedule, trainable.metrics.STEP) at which to report besides every
    # eval_every epochs: a sweep sets ASHA's rungs here.
    report_at: list[int] = field(default_factory=list)

    @classmethod
    def from_dict(cls, d: dict) -> Settings:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            see = "see settings in spaces/README.md"
            raise ConfigError(unknown_key("setting", unknown, cls.__dataclass_fields__, see))
        s = cls(**d)
        Split.from_dict(s.split)  # a bad split is a DatasetError now, not in every trial
        if isinstance(s.amp, bool):  # YAML reads `amp: off` / `on` as a boolean
            s.amp = "auto" if s.amp else "off"
        if not (isinstance(s.eval_every, int) and s.eval_every >= 1):
            raise ConfigError(f"eval_every must be an integer >= 1, got {s.eval_every!r}")
        if not (isinstance(s.val_detections, int) and s.val_detections >= 1):
            raise ConfigError(f"val_detections must be an integer >= 1, got {s.val_detections!r}")
        if s.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {s.device!r}")
        if s.num_workers is not None and not (isinstance(s.num_workers, int) and s.num_workers >= 0):
            raise ConfigError(f"num_workers must be an integer >= 0, got {s.num_workers!r}")
        steps_ok = all(isinstance(f, int) and not isinstance(f, bool) and 0 < f < STEPS for f in s.report_at)
        if not (isinstance(s.report_at, list) and steps_ok):  # fractions: a sweep of an older version
            raise ConfigError(
                f"report_at must be whole progress steps in (0, {STEPS}) (thousandths of the schedule), got "
                f"{s.report_at!r}"
            )
        if s.amp not in AMP_CHOICES:
            raise ConfigError(f"amp must be one of {', '.join(AMP_CHOICES)}, got {s.amp!r}")
        for k in ("cudnn_benchmark", "tf32", "deterministic"):
            if not isinstance(getattr(s, k), bool):
                raise ConfigError(f"{k} must be true or false, got {getattr(s, k)!r}")
        return s

    def resolved_device(self, reserved_gpus: float | None = None) -> str:
        """The trial's device (trial_device): `reserved_gpus` is what Ray reserved for it, None outside Ray."""
        import torch

        return trial_device(self.device, reserved_gpus, torch.cuda.is_available())

    def amp_dtype(self, device: str) -> torch.dtype | None:
        """The autocast dtype of training, or None for full precision."""
        import torch

        if self.amp == "off" or (self.amp == "auto" and device != "cuda"):
            return None
        if device != "cuda":
            raise ConfigError(f"amp: {self.amp} needs a CUDA device (Detectron2's AMPTrainer); on {device} use off")
        if self.amp == "fp16" or (self.amp == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16
        if not torch.cuda.is_bf16_supported():
            raise ConfigError("amp: bf16 is not supported by this GPU: use fp16 or auto")
        return torch.bfloat16

    def configure_torch(self, device: str) -> None:
        """Process-wide torch switches of a trial: CPU threads, and on CUDA TF32, cuDNN autotuning, determinism."""
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        if device != "cuda":
            return
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.tf32
        torch.backends.cudnn.benchmark = self.cudnn_benchmark and not self.deterministic
        torch.backends.cudnn.deterministic = self.deterministic
        if self.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
            torch.use_deterministic_algorithms(True, warn_only=True)  # warns for ops without a deterministic kernel


AMP_CHOICES = ("auto", "off", "fp16", "bf16")


def trial_device(requested: str, reserved_gpus: float | None, cuda_available: bool) -> str:
    """The device a trial trains on: `requested` is settings.device, `reserved_gpus` the GPUs Ray reserved for the
    trial (None outside Ray).

    Ray does not hide the GPUs from a task that reserves none, so inside Ray the reservation decides: 0 GPUs is the
    CPU whatever `auto` sees (else CPU trials would share cuda:0 uncounted, with AMP and cuDNN autotuning on while the
    leaderboard charges CPU-hours), and `cuda` without a GPU reserved is refused. Outside Ray `auto` is CUDA where
    torch sees it."""
    if reserved_gpus is not None and reserved_gpus <= 0:
        if requested == "cuda":
            raise ConfigError("device: cuda, but the trial reserves no GPU: reserve one (--gpus-per-trial) or use auto")
        return "cpu"
    if requested == "auto":
        return "cuda" if cuda_available else "cpu"
    return requested
