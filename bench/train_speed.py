"""Train-step throughput, standard and PGD-3 adversarial, FCN-ResNet50, jaxseg vs PyTorch.

Both sides: the same ported weights, batch 4 at 224x224 fp32, SGD momentum 0.9 / wd 1e-4,
CE + 0.5 aux CE; the adversary is L-inf PGD eps 8/255, step 2/255, 3 steps, random start,
BatchNorm in inference mode during the attack (torchattacks' default). Steps are interleaved
and the median of each is reported.

    .venv/bin/python -m bench.train_speed [--batch 4] [--size 224] [--repeats 5]
"""

import argparse

import jax
import numpy as np
import torch

import torchattacks

from bench.common import interleaved_medians
from jaxseg import config as base_config
from jaxseg import runtime as parallel
from jaxseg.models import port
from jaxseg.train import optim
from jaxseg.train import state as training
from tests.helpers.torch_reference import PixelLogits, fcn_resnet50, normalize


def torch_step(fcn, optimizer, attack):
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)

    def step(images, labels):
        if attack is not None:
            images = attack(images, labels)  # eval-mode BN inside, training mode restored
        optimizer.zero_grad(set_to_none=True)
        out = fcn(normalize(images))
        loss = loss_fn(out["out"], labels) + 0.5 * loss_fn(out["aux"], labels)
        loss.backward()
        optimizer.step()
        return loss

    return step


def jax_step(model, variables, mode):
    config = base_config.base()
    config.optim.lr = 0.01
    config.adv.update(mode=mode, eps=8 / 255, step_size=2 / 255, steps=3)
    tx = optim.make_optimizer(config.optim, 1000)
    mesh = parallel.make_mesh()
    state = training.create_state(variables, tx, jax.random.key(0))
    step = training.compile_step(training.make_train_step(model, tx, config), mesh, state)
    return step, state, mesh


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    reference = fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    model, variables, _ = port.port({k: v.numpy() for k, v in reference.state_dict().items()})
    rng = np.random.default_rng(0)
    images = rng.random((args.batch, args.size, args.size, 3), np.float32)
    labels = rng.integers(0, 21, (args.batch, args.size, args.size)).astype(np.int32)
    x_torch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y_torch = torch.from_numpy(labels).long()

    runners = {}
    for mode, name in (("none", "standard"), ("pgd", "PGD-3 AT")):
        fcn = fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
        fcn.load_state_dict(reference.state_dict())
        fcn.train()
        optimizer = torch.optim.SGD(fcn.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        attack = None
        if mode == "pgd":
            attack = torchattacks.PGD(PixelLogits(fcn), eps=8 / 255, alpha=2 / 255, steps=3,
                                      random_start=True)
        t_step = torch_step(fcn, optimizer, attack)
        step, state, mesh = jax_step(model, variables, mode)
        x_jax, y_jax = parallel.shard_batch(mesh, (images, labels))
        holder = {"state": state}

        def run_jax(step=step, holder=holder, x=x_jax, y=y_jax):
            holder["state"], metrics = step(holder["state"], x, y)
            jax.block_until_ready(metrics)

        runners[name] = (run_jax, lambda t_step=t_step: t_step(x_torch, y_torch))
        run_jax(), runners[name][1]()  # compile / warm up

    print(f"train step, FCN-ResNet50, batch {args.batch} at {args.size}x{args.size} fp32, "
          f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"median of {args.repeats} interleaved")
    for name, (run_jax, run_torch) in runners.items():
        medians = interleaved_medians({"jaxseg": run_jax, "pytorch": run_torch}, args.repeats)
        rates = {k: args.batch / v for k, v in medians.items()}
        print(f"  {name:<9} jaxseg {rates['jaxseg']:6.2f} images/s   pytorch "
              f"{rates['pytorch']:6.2f} images/s   ratio {rates['jaxseg'] / rates['pytorch']:.2f}x")


if __name__ == "__main__":
    main()
