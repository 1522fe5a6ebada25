"""One Mask R-CNN trial: data, config, augmentation, training, evaluation, prediction."""

import logging
import warnings

# Known, harmless warnings from Detectron2 2024 code on torch 2.14 / setuptools 80: they would bury our messages.
warnings.filterwarnings("ignore", message=r"`torch.jit.script` is deprecated", category=FutureWarning)
warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated", category=UserWarning)
warnings.filterwarnings("ignore", message=r"torch.meshgrid: in an upcoming release", category=UserWarning)
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)  # "is_fx_tracing will return true ..."
