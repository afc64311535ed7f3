"""Training-pipeline throughput on CamVid 240x180 with augmentation, next to the rate at which a
standard training step (fcn_resnet26_w16, forward + backward + SGD, same batch) consumes images.
The loader should not be the bottleneck: its rate alone must exceed the step's, and feeding the
step from the loader should run about as fast as the step on a fixed batch.

    .venv/bin/python -m bench.data_pipeline [--root data/camvid] [--batch 8]
        [--threads 2] [--batches 40] [--steps 12]

Augmentation as torchvision's reference, scaled to CamVid: short side resized to a random length
in [90, 360] (0.5x to 2x of 180), horizontal flip, 180x240 crop padded with 0 / 255.
"""

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import jaxseg.models
from jaxseg.data import Shard, camvid, train_loader

HERE = os.path.dirname(os.path.abspath(__file__))
CROP = (180, 240)
SHORT_SIDE_RANGE = (90, 360)


def loader_rate(dataset, batch, threads, workers, batches, warmup=5):
    loader = train_loader(dataset, batch, CROP, short_side_range=SHORT_SIDE_RANGE, seed=0,
                          shard=Shard(0, 1), num_threads=threads, num_workers=workers)
    try:
        for _ in range(warmup):
            next(loader)
        start = time.perf_counter()
        for _ in range(batches):
            next(loader)
        return batches * batch / (time.perf_counter() - start)
    finally:
        loader.close()


def make_train_step(num_classes):
    """A self-contained standard step: CE (ignore 255) on 'out' + 0.5 * 'aux', SGD momentum."""
    model = jaxseg.models.build("fcn_resnet26_w16", num_classes=num_classes)
    variables = jaxseg.models.init(model, jax.random.key(0), image_size=CROP)
    optimizer = optax.sgd(0.01, momentum=0.9)
    opt_state = optimizer.init(variables["params"])

    def cross_entropy(logits, labels):
        valid = labels != 255
        safe = jnp.where(valid, labels, 0)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
        return jnp.sum(losses * valid) / jnp.maximum(jnp.sum(valid), 1)

    def loss_fn(params, batch_stats, images, labels, key):
        outputs, updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                       train=True, mutable=["batch_stats"],
                                       rngs={"dropout": key})
        loss = cross_entropy(outputs["out"], labels) + 0.5 * cross_entropy(outputs["aux"], labels)
        return loss, updates["batch_stats"]

    @jax.jit
    def step(params, batch_stats, opt_state, images, labels, key):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, batch_stats, images, labels, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    state = [variables["params"], variables["batch_stats"], opt_state]
    key = jax.random.key(1)

    def run(batch):
        nonlocal key
        key, sub = jax.random.split(key)
        state[0], state[1], state[2], loss = step(*state, batch["image"], batch["label"], sub)
        return loss

    return run


def step_rates(run, fixed, dataset, batch_size, threads, steps):
    """Images/s of the step on a fixed batch and of the step fed by the loader (prefetching in
    the background), timed alternately so that load from other processes hits both alike."""
    loader = train_loader(dataset, batch_size, CROP, short_side_range=SHORT_SIDE_RANGE, seed=1,
                          shard=Shard(0, 1), num_threads=threads)
    with loader:
        run(fixed).block_until_ready()  # compile
        run(next(loader)).block_until_ready()
        fixed_times, fed_times = [], []
        for _ in range(steps):
            start = time.perf_counter()
            run(fixed).block_until_ready()
            fixed_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            run(next(loader)).block_until_ready()
            fed_times.append(time.perf_counter() - start)
    return batch_size / statistics.median(fixed_times), batch_size / statistics.median(fed_times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", default=os.path.join(HERE, "..", "data", "camvid"),
                        help="a prepared CamVid copy (default: data/camvid, what "
                        "`python -m jaxseg.cli.prepare camvid` creates)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, default=40, help="loader batches timed")
    parser.add_argument("--steps", type=int, default=12, help="training steps timed (each way)")
    args = parser.parse_args()
    from jaxseg import runtime

    runtime.keep_freed_memory()  # as the CLIs run: glibc keeps freed memory on CPU

    dataset = camvid(args.root, "train")
    print(f"CamVid train: {len(dataset)} images 240x180; crop {CROP[1]}x{CROP[0]}, short side "
          f"{SHORT_SIDE_RANGE}, flip; batch {args.batch}; {os.cpu_count()} CPU cores; "
          f"jax {jax.__version__} on {jax.devices()[0].platform}")
    rates = {}
    for threads, workers in ((1, 0), (args.threads, 0), (args.threads, 1)):
        rates[threads, workers] = loader_rate(dataset, args.batch, threads, workers,
                                              args.batches)
        print(f"loader  threads={threads} workers={workers}: {rates[threads, workers]:8.1f} "
              "images/s")

    run = make_train_step(dataset.info.num_classes)
    with train_loader(dataset, args.batch, CROP, shard=Shard(0, 1)) as loader:
        fixed = next(loader)
    consume, fed = step_rates(run, fixed, dataset, args.batch, args.threads, args.steps)
    print(f"train step fcn_resnet26_w16 (fwd+bwd+SGD), fixed batch: {consume:8.1f} images/s")
    print(f"train step fed by the loader:                          {fed:8.1f} images/s")
    verdict = "not the bottleneck" if fed >= 0.9 * consume else "slows the step"
    print(f"loader alone / step consumption: {rates[args.threads, 0] / consume:.1f}x; "
          f"fed / fixed step: {fed / consume:.2f} (the loader is {verdict})")


if __name__ == "__main__":
    main()
