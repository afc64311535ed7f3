"""Building models by name, and the config a checkpoint stores to rebuild them."""

import jax
import jax.numpy as jnp

from jaxseg.errors import JaxsegError
from jaxseg.models.fcn import ARCHS, FCN
from jaxseg.models.resnet import REMAT_POLICIES


def fcn(arch, num_classes=21, aux=True, dtype=None, remat="none"):
    """Build an FCN by architecture name (see `ARCHS`); `dtype`: compute dtype (None = fp32),
    `remat`: per-block rematerialisation (see `resnet.REMAT_POLICIES`)."""
    if arch not in ARCHS:
        raise JaxsegError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if remat not in REMAT_POLICIES:
        raise JaxsegError(f"unknown remat {remat!r}; choose one of {', '.join(REMAT_POLICIES)}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise JaxsegError(f"num_classes must be a positive integer, got {num_classes!r}")
    return FCN(arch=arch, num_classes=num_classes, aux=aux, dtype=dtype, remat=remat)


def init(model, key, image_size=(64, 64)):
    """Fresh variables {'params', 'batch_stats'} with Flax's default initialisers (a port from
    torchvision starts fresh heads as torchvision does: `port.torch_fresh_heads`)."""
    dummy = jnp.zeros((1, *image_size, 3), jnp.float32)
    return jax.jit(lambda k: model.init(k, dummy, train=False))(key)


def model_config(model):
    """The plain dict a checkpoint stores to rebuild `model`."""
    return {"arch": model.arch, "num_classes": model.num_classes, "aux": model.aux}


def from_config(config, dtype=None, remat="none"):
    return fcn(config["arch"], int(config["num_classes"]), bool(config.get("aux", True)), dtype,
               remat)
