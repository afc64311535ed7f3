"""CamVid (240x180, 11 classes), standard training of the small FCN, CPU scale.

    python train.py --config configs/camvid_standard.py --workdir workdirs/camvid_standard

Reads data/camvid, where `python -m jaxseg.cli.prepare camvid --download` puts CamVid at 240x180
(elsewhere: --config.data.train=camvid:/path/to/camvid). Same architecture and budget as
camvid_at.py.
"""

from jaxseg.config import base


def get_config():
    config = base()
    config.model.arch = "fcn_resnet26_w16"
    config.data.train = "camvid:data/camvid"  # what `prepare camvid` creates
    config.data.train_split = "train"
    config.data.eval_split = "val"
    config.data.crop_size = (160, 160)
    config.data.short_side_range = (120, 240)  # 0.67x - 1.33x of the 180 px short side
    config.batch_size = 8
    config.steps = 2000  # ~44 epochs of the 367 training images
    config.optim.lr = 0.02
    config.adv.eps = 4 / 255
    config.adv.steps = 3
    config.checkpoint.every = 100
    config.eval.every = 500
    config.eval.num_images = 32
    config.eval.eps = 4 / 255
    return config
