"""Runs a short training in its own process (tests start it with different device counts and as
two cooperating JAX processes) and saves the final parameters of this process to an .npz."""

import sys

import jax
import numpy as np
from flax import traverse_util

from jaxseg import trainer
from jaxseg.config import base


def tiny_config(steps=2):
    config = base()
    config.model.arch = "fcn_resnet14_w8"
    config.data.kwargs.size = (32, 32)
    config.data.kwargs.num_examples = 16
    config.data.crop_size = (32, 32)
    config.batch_size = 8
    config.steps = steps
    config.log_every = 1
    config.checkpoint.every = 100
    config.eval.every = 1000
    config.eval.attack = ""
    config.eval.samples = 0
    config.eval.num_images = 8
    return config


def main(workdir, output, mode="none", coordinator="", process_id="0", num_processes="1"):
    trainer.initialize_distributed(coordinator or None, int(num_processes), int(process_id))
    config = tiny_config()
    config.adv.mode = mode
    config.adv.steps = 2
    result = trainer.train(config, workdir)
    params = jax.device_get(result["state"].params)
    flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}
    np.savez(output, **flat)


if __name__ == "__main__":
    main(*sys.argv[1:])
