"""jaxseg: adversarially robust semantic segmentation in JAX/Flax."""

from jaxseg.errors import JaxsegError

__version__ = "0.1.0"
__all__ = ["JaxsegError", "__version__"]
