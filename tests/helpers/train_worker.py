"""Runs a short training in its own process (tests start it with different device counts and as
two cooperating JAX processes) and saves the final parameters of this process to an .npz."""

import os
import sys

import jax
import numpy as np
from flax import traverse_util

from jaxseg import config as configs
from jaxseg import runtime
from jaxseg.train import train

QUICK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "configs", "quick.py")


def tiny_config(steps=2):
    """configs/quick.py with `steps` steps."""
    config = configs.load(QUICK)
    config.steps = steps
    return config


def main(workdir, output, mode="none", coordinator="", process_id="0", num_processes="1"):
    if coordinator:
        runtime.initialize_distributed("on", coordinator, int(num_processes), int(process_id))
    else:  # a job found in the environment (a simulated SLURM launch) is joined by itself
        runtime.initialize_distributed("auto")
    config = tiny_config()
    config.adv.mode = mode
    config.adv.steps = 2
    result = train(config, workdir)
    params = jax.device_get(result["state"].params)
    flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
    np.savez(output, **flat)


if __name__ == "__main__":
    main(*sys.argv[1:])
