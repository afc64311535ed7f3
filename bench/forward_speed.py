"""Forward time of FCN-ResNet50 (or `--arch`: any of torchvision's segmentation models, e.g.
deeplabv3_resnet50) in eval mode, jaxseg vs torchvision, on the same weights.

    .venv/bin/python -m bench.forward_speed [--arch fcn_resnet50] [--batch 1] [--size 224]
        [--repeats 20]
"""

import argparse

import jax
import numpy as np
import torch

from bench.common import interleaved_medians, machine
from jaxseg.models import port
from tests.helpers.torch_reference import TORCH_MODELS


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="fcn_resnet50", choices=sorted(TORCH_MODELS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    from jaxseg import runtime

    runtime.keep_freed_memory()  # as the CLIs run: glibc keeps freed memory on CPU

    torch.manual_seed(0)
    aux = {} if args.arch.startswith("lraspp") else {"aux_loss": True}
    reference = TORCH_MODELS[args.arch](weights=None, weights_backbone=None, num_classes=21,
                                        **aux).eval()
    model, variables, _ = port.port({k: v.numpy() for k, v in reference.state_dict().items()})
    images = np.random.default_rng(0).random((args.batch, args.size, args.size, 3), np.float32)

    forward = jax.jit(lambda v, x: model.apply(v, x)["out"])
    x_jax = jax.device_put(images)
    x_torch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()

    def run_jax():
        forward(variables, x_jax).block_until_ready()

    def run_torch():
        with torch.no_grad():
            reference(x_torch)["out"]

    run_jax(), run_torch()  # compile / warm up
    medians = interleaved_medians({"jaxseg": run_jax, "torchvision": run_torch}, args.repeats)
    print(f"{args.arch} forward, {args.batch}x{args.size}x{args.size}x3 fp32, eval, "
          f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), median of {args.repeats}")
    print(f"machine: {machine()}")
    for name, seconds in medians.items():
        print(f"  {name:<12} {seconds * 1e3:8.1f} ms  {args.batch / seconds:7.2f} images/s")
    print(f"  speed ratio jaxseg/torchvision: {medians['torchvision'] / medians['jaxseg']:.2f}x")


if __name__ == "__main__":
    main()
