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


@pytest.mark.parametrize("override, message", [
    ("checkpoint.keep=0", "'checkpoint.keep' must be an integer >= 1"),
    ("checkpoint.every=0", "'checkpoint.every' must be an integer >= 1"),
    ("log_every=0", "'log_every' must be an integer >= 1"),
    ("steps=0", "'steps' must be an integer >= 1"),
    ("eval.num_images=-1", "'eval.num_images' must be an integer >= 1"),
    ("model.dtype=float16", "'model.dtype' must be one of auto, float32, bfloat16"),
    ("model.remat=blocks", "'model.remat' must be one of none, convs, full"),
])
def test_check_rejects_integers_that_cannot_work(override, message):
    config = configfile.apply_overrides(base(), [override])
    with pytest.raises(JaxsegError, match=message):
        configfile.check(config)


@pytest.mark.parametrize("override, message", [
    ("adv.eps=8/0", "'adv.eps': '8/0': division by zero"),
    ("adv.eps=1e400", "'adv.eps': not a finite number"),
])
def test_numbers_must_be_finite(override, message):
    with pytest.raises(JaxsegError, match=message):
        configfile.apply_overrides(base(), [override])


def test_linf_eps_above_one_is_the_8_for_8_over_255_slip():
    config = configfile.apply_overrides(base(), ["adv.eps=8"])
    with pytest.raises(JaxsegError, match=r"Linf eps must be in \[0, 1\].*8/255"):
        training.adversary(config.adv)
    config = configfile.apply_overrides(base(), ["adv.eps=3.0", "adv.attack=pgd_l2"])
    training.adversary(config.adv)  # an L2 radius may exceed 1
    with pytest.raises(JaxsegError, match="--eps: not a finite number"):
        configfile.parse_number("1e400", "eps")
    with pytest.raises(JaxsegError, match="--eps: '8/0': division by zero"):
        configfile.parse_number("8/0", "eps")


def test_skip_bad_can_be_set_from_the_command_line():
    config = configfile.apply_overrides(base(), ["data.skip_bad=true"])
    assert config.data.skip_bad is True


def test_config_choices_are_the_library_choices():
    from jaxseg import models, runtime
    import importlib

    defaults = importlib.import_module("jaxseg.config.base")

    assert defaults.CHOICES["model.dtype"] == runtime.COMPUTE_DTYPES
    assert defaults.CHOICES["model.remat"] == tuple(models.REMAT_POLICIES)


def test_string_options_take_the_text_as_written():
    config = configfile.apply_overrides(base(), ["adv.mode=none", "model.init=123",
                                                 "data.eval=None"])
    assert (config.adv.mode, config.model.init, config.data.eval) == ("none", "123", "None")
