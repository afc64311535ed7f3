"""CamVid, the small DeepLabV3 with PGD adversarial training (L-inf eps 4/255, 3 steps, every
example replaced); everything else as camvid_at.py.

    python train.py --config configs/camvid_deeplabv3_at.py --workdir workdirs/camvid_deeplabv3_at
"""

from . import camvid_at


def get_config():
    config = camvid_at.get_config()
    config.model.arch = "deeplabv3_resnet26_w16"
    return config
