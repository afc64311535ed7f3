"""`make demo`: what jaxseg can do so far, end to end, on this machine, without network.

Builds FCN-ResNet50, exports it as a torchvision state dict, ports that file back into an orbax
checkpoint the way a user brings torchvision weights, reloads it with one call, checks the round
trip is exact, and segments a scene. Outputs go to demo_output/.
"""

import os
import sys
import time

import jax
import numpy as np

from jaxseg import checkpoint, models, port
from jaxseg.errors import cli_guard

OUTPUT = "demo_output"


def scene(height=180, width=240):
    """A real CamVid image when the shared data is beside the project, else a colour ramp."""
    camvid = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "camvid", "val")
    names = sorted(os.listdir(camvid)) if os.path.isdir(camvid) else []
    if names:
        from PIL import Image

        image = Image.open(os.path.join(camvid, names[0])).convert("RGB").resize((width, height))
        return np.asarray(image, np.float32)[None] / 255.0, names[0]
    ramp = np.linspace(0.0, 1.0, width, dtype=np.float32)
    return np.broadcast_to(ramp[None, None, :, None], (1, height, width, 3)).copy(), "colour ramp"


@cli_guard
def main():
    os.makedirs(OUTPUT, exist_ok=True)
    pth = os.path.join(OUTPUT, "fcn_resnet50_random.pth")
    ckpt = os.path.join(OUTPUT, "fcn_resnet50_ckpt")

    model = models.fcn("fcn_resnet50", num_classes=21)
    variables = models.init(model, jax.random.key(0))
    port.export_pth(variables, pth)
    print(f"1. exported a fresh fcn_resnet50 as a torchvision state dict: {pth}")

    ported_model, ported, source = port.port(pth)
    checkpoint.save(ckpt, ported_model, ported, overwrite=True)
    print(f"2. ported it back ({source} format) into an orbax checkpoint: {ckpt}")

    loaded_model, loaded = checkpoint.load(ckpt)
    exact = all(np.array_equal(a, b) for a, b in
                zip(jax.tree_util.tree_leaves(variables), jax.tree_util.tree_leaves(loaded)))
    print(f"3. reloaded with jaxseg.checkpoint.load: round trip exact = {exact}")
    print(port.summary(loaded_model, loaded))

    image, name = scene()
    forward = jax.jit(lambda v, x: loaded_model.apply(v, x))
    forward(loaded, image)["out"].block_until_ready()
    start = time.perf_counter()
    logits = forward(loaded, image)["out"].block_until_ready()
    elapsed = time.perf_counter() - start
    print(f"4. segmented {name} ({image.shape[1]}x{image.shape[2]}) in {elapsed * 1e3:.0f} ms: "
          f"logits {tuple(logits.shape)}, {len(np.unique(np.asarray(logits).argmax(-1)))} classes "
          f"predicted (random weights: no meaning yet)")
    return 0 if exact else 1


if __name__ == "__main__":
    sys.exit(main())
