"""CamVid, PGD adversarial training (Madry: every example replaced), L-inf eps 4/255, 3 steps of
step size 2.5 * eps / 3 from a random start. Same architecture and budget as camvid_standard.py.

    python train.py --config configs/camvid_at.py --workdir workdirs/camvid_at
"""

from . import camvid_standard


def get_config():
    config = camvid_standard.get_config()
    config.adv.mode = "pgd"
    config.adv.attack = "pgd"
    config.adv.fraction = 1.0
    return config
