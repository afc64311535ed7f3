"""jaxseg: adversarially robust semantic segmentation in JAX/Flax.

`import jaxseg` is cheap; the concerns load on first use:

    jaxseg.models      FCN-ResNet50/101 (torchvision-exact), checkpoints, torchvision ports
    jaxseg.attacks     the attack kernel, segmentation losses, named attacks
    jaxseg.synthesis   inpainting (eq. 6) and generation (eq. 7) on the kernel, quality metrics
    jaxseg.data        datasets and grain pipelines
    jaxseg.train       train state and steps, the training loop, optimizer, checkpoints
    jaxseg.evaluation  confusion matrices, metrics, reports
    jaxseg.config      the base training config and command-line overrides
    jaxseg.runtime     mesh, multi-host start-up, loop compilation policy per backend
"""

import importlib

from jaxseg.errors import JaxsegError

__version__ = "0.1.0"
SUBPACKAGES = ("models", "attacks", "synthesis", "data", "train", "evaluation", "config",
               "runtime", "labels", "io", "viz", "cli")
__all__ = ["JaxsegError", "__version__", *SUBPACKAGES]


def __getattr__(name):
    if name in SUBPACKAGES:
        return importlib.import_module(f"jaxseg.{name}")
    raise AttributeError(f"module 'jaxseg' has no attribute {name!r}")
