"""Demo: a small FCN on the built-in synthetic scenes, a few CPU minutes (`make demo`).

    python train.py --config configs/demo.py --workdir workdirs/demo_standard
    python train.py --config configs/demo.py --workdir workdirs/demo_at --config.adv.mode=pgd

Tuned for `make demo` on 2 CPU cores (docs/demo.md): 64x64 scenes make a step ~2.3x cheaper
than 96x96, which buys 800 steps for both models. The adversary is PGD, 2 steps, L-inf eps
16/255: at 8/255, and with FGSM-RS at any eps, the AT model's input gradients stayed noisy and
its inpainting lost to the mean fill on PSNR; at 16/255 it paints smooth, class-coloured fills.
The standard model gets the same architecture and number of steps.
"""

from . import quick


def get_config():
    config = quick.get_config()  # the built-in scenes, at a size and length that show something
    config.model.arch = "fcn_resnet26_w16"
    config.data.train = "synthetic"
    config.data.kwargs = {"size": (64, 64)}
    config.data.crop_size = (64, 64)
    config.data.short_side_range = (54, 80)
    config.batch_size = 8
    config.steps = 800
    config.optim.lr = 0.02
    config.adv.eps = 16 / 255
    config.adv.steps = 2
    config.checkpoint.every = 400
    config.log_every = 10
    # demo.py evaluates both models itself (clean and PGD); the trainer's own evaluation only
    # runs at the end, clean, for its sample images
    config.eval.every = 100000
    config.eval.attack = ""
    config.eval.num_images = 16
    config.eval.batch_size = 8
    config.eval.samples = 4
    return config
