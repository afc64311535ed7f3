"""Every committed config loads, and the trainer would accept its values."""

import glob
import os

import pytest

from jaxseg import config as configfile
from jaxseg import models
from jaxseg.config import base
from jaxseg.errors import JaxsegError
from jaxseg.train import optim
from jaxseg.train import state as training
from tests.helpers import paths

REPO = str(paths.REPO)
CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                 if not p.endswith("__init__.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_config_is_complete_and_valid(path):
    config = configfile.load(path)
    assert set(config.keys()) == set(base().keys())
    assert config.model.arch in models.ARCHS
    training.adversary(config.adv)
    optim.make_optimizer(config.optim, 100)
    with open(path) as f:
        assert "python train.py --config configs/" in f.read()  # the run command is documented


def test_paper_recipes():
    pre = configfile.load(os.path.join(REPO, "configs", "coco_fcn50_standard.py"))
    assert (pre.batch_size, pre.epochs, pre.optim.lr, pre.optim.aux_lr_mult) == (32, 30, 0.02, 10.0)
    assert tuple(pre.data.short_side_range) == (260, 1040) and tuple(pre.data.crop_size) == (480, 480)
    at101 = configfile.load(os.path.join(REPO, "configs", "coco_fcn101_at.py"))
    assert (at101.model.arch, at101.epochs, at101.adv.mode) == ("fcn_resnet101", 3, "pgd")
    rb = configfile.load(os.path.join(REPO, "configs", "voc_fcn50_rb.py"))
    assert rb.optim.freeze_backbone and rb.adv.mode == "none"


def test_overrides_parse_types_and_reject_unknown_keys():
    config = base()
    configfile.apply_overrides(config, ["adv.eps=4/255", "data.crop_size=(64,64)", "adv.mode=pgd",
                                        "optim.freeze_backbone=true", "steps=7"])
    assert config.adv.eps == pytest.approx(4 / 255) and tuple(config.data.crop_size) == (64, 64)
    assert config.optim.freeze_backbone is True and config.steps == 7
    with pytest.raises(JaxsegError, match="unknown config key 'adv.epsilon'"):
        configfile.apply_overrides(config, ["adv.epsilon=1"])
    with pytest.raises(JaxsegError, match="config key 'steps': bad value 'many'"):
        configfile.apply_overrides(config, ["steps=many"])
