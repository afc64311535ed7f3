"""Train-step throughput, standard and PGD-3 adversarial, FCN-ResNet50 (or `--arch`: any of
torchvision's segmentation models, e.g. deeplabv3_resnet50), jaxseg vs PyTorch.

Both sides: the same weights (torchvision's fresh model with seed 0, ported), batch 4 at
224x224 fp32, SGD momentum 0.9 / wd 1e-4, CE + 0.5 aux CE; the adversary is L-inf PGD eps
8/255, step 2/255, 3 steps, random start, BatchNorm in inference mode during the attack
(torchattacks' default). Fair: each framework runs in its own process (in one process torch's
OpenMP threads keep spinning after each torch op and slow XLA by ~1.6x), steps alternate between
the two processes, and the median of each is reported with the CPU model and load.
`--glibc-heap` adds a worker, jaxseg with glibc's malloc defaults (JAXSEG_CPU_HEAP=system,
see jaxseg.runtime.keep_freed_memory), and `--lax-3x3` one with its 3x3 convolutions as lax
convolutions instead of Winograd's (`jaxseg.runtime.winograd_convs`), for the change each
policy makes.

    .venv/bin/python -m bench.train_speed [--arch fcn_resnet50] [--batch 4] [--size 224]
        [--repeats 5] [--glibc-heap] [--lax-3x3]
"""

import argparse

from bench.common import alternated_medians, machine, serve


def build_inputs(batch, size):
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.random((batch, size, size, 3), np.float32)
    labels = rng.integers(0, 21, (batch, size, size)).astype(np.int32)
    return images, labels


def reference_fcn(arch="fcn_resnet50"):
    import torch

    from tests.helpers.torch_reference import TORCH_MODELS

    torch.manual_seed(0)
    aux = {} if arch.startswith("lraspp") else {"aux_loss": True}
    return TORCH_MODELS[arch](weights=None, weights_backbone=None, num_classes=21, **aux)


def torch_worker(mode, batch, size, arch):
    import torch

    import torchattacks
    from tests.helpers.torch_reference import PixelLogits, normalize

    images, labels = build_inputs(batch, size)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels).long()
    fcn = reference_fcn(arch).train()
    optimizer = torch.optim.SGD(fcn.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    attack = None
    if mode == "pgd":
        attack = torchattacks.PGD(PixelLogits(fcn), eps=8 / 255, alpha=2 / 255, steps=3,
                                  random_start=True)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)

    def step():
        inputs = attack(x, y) if attack is not None else x  # eval-mode BN inside
        optimizer.zero_grad(set_to_none=True)
        out = fcn(normalize(inputs))
        loss = loss_fn(out["out"], y)
        if "aux" in out:
            loss = loss + 0.5 * loss_fn(out["aux"], y)
        loss.backward()
        optimizer.step()

    step()  # warm-up
    serve(step)


def jax_worker(mode, batch, size, arch, winograd=None):
    from jaxseg import runtime
    from jaxseg.models import port

    runtime.keep_freed_memory()  # as the CLIs run: glibc keeps freed memory on CPU

    weights = {k: v.numpy() for k, v in reference_fcn(arch).state_dict().items()}
    with runtime.conv_policy(winograd_convs=winograd):  # models trace their convolutions here
        model, variables, _ = port.port(weights)
        _serve_jax(model, variables, mode, batch, size)  # compiles (traces the model) here


def _serve_jax(model, variables, mode, batch, size):
    import jax

    from jaxseg import config as base_config
    from jaxseg import runtime
    from jaxseg.train import optim
    from jaxseg.train import state as training

    config = base_config.base()
    config.optim.lr = 0.01
    config.adv.update(mode=mode, eps=8 / 255, step_size=2 / 255, steps=3)
    tx = optim.make_optimizer(config.optim, 1000)
    mesh = runtime.make_mesh()
    state = training.create_state(variables, tx, jax.random.key(0))
    # placed as the training loop places it: an unplaced state makes the second call retrace
    # (its outputs carry the mesh in their types) and compile again
    holder = {"state": runtime.place(state, training.state_shardings(mesh, state))}
    compiled = training.compile_step(training.make_train_step(model, tx, config), mesh,
                                     holder["state"])
    x, y = runtime.shard_batch(mesh, build_inputs(batch, size))

    def step():
        holder["state"], metrics = compiled(holder["state"], x, y)
        jax.block_until_ready(metrics)

    step()  # warm-up: compiles
    serve(step)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="fcn_resnet50",
                        help="one of torchvision's six segmentation models")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--glibc-heap", action="store_true",
                        help="also time jaxseg with glibc's malloc defaults (JAXSEG_CPU_HEAP=system)")
    parser.add_argument("--lax-3x3", action="store_true",
                        help="also time jaxseg with lax 3x3 convolutions (no Winograd)")
    parser.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("none", "pgd"), default="none", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker == "jax":
            jax_worker(args.mode, args.batch, args.size, args.arch,
                       False if args.lax_3x3 else None)
        else:
            torch_worker(args.mode, args.batch, args.size, args.arch)
        return

    import jax
    import torch

    print(f"train step, {args.arch}, batch {args.batch} at {args.size}x{args.size} fp32, "
          f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
          f"each framework in its own process, median of {args.repeats} alternated steps")
    print(f"machine: {machine()}")
    for mode, name in (("none", "standard"), ("pgd", "PGD-3 AT")):
        common = ["bench.train_speed", "--arch", args.arch, "--batch", str(args.batch),
                  "--size", str(args.size), "--mode", mode]
        workers = {"jaxseg": common + ["--worker", "jax"],
                   "pytorch": common + ["--worker", "torch"]}
        if args.glibc_heap:
            workers["glibc heap"] = common + ["--worker", "jax"]
        if args.lax_3x3:
            workers["lax 3x3"] = common + ["--worker", "jax", "--lax-3x3"]
        medians = alternated_medians(workers, args.repeats,
                                     environ={"glibc heap": {"JAXSEG_CPU_HEAP": "system"}})
        rates = {k: args.batch / v for k, v in medians.items()}
        print(f"  {name:<9} jaxseg {medians['jaxseg']:6.2f} s/step {rates['jaxseg']:5.2f} images/s"
              f"   pytorch {medians['pytorch']:6.2f} s/step {rates['pytorch']:5.2f} images/s"
              f"   ratio {rates['jaxseg'] / rates['pytorch']:.2f}x", flush=True)
        if args.glibc_heap:
            before = medians["glibc heap"]
            print(f"  {'':<9} jaxseg with glibc's malloc defaults {before:6.2f} s/step: the kept "
                  f"heap changes the step by {100 * (medians['jaxseg'] / before - 1):+.1f} %",
                  flush=True)
        if args.lax_3x3:
            before = medians["lax 3x3"]
            print(f"  {'':<9} jaxseg with lax 3x3 convolutions {before:6.2f} s/step: Winograd's "
                  f"change the step by {100 * (medians['jaxseg'] / before - 1):+.1f} %",
                  flush=True)
    print(f"machine after: {machine()}")


if __name__ == "__main__":
    main()
