"""Training: state and steps for every adversarial mode (state.py), the loop with checkpoints,
resume, signals and logging (loop.py), the torchvision optimizer recipe (optim.py) and orbax
training checkpoints (checkpoint.py).

    result = jaxseg.train.train(jaxseg.config.base(), "workdirs/run")
"""

from jaxseg.train import checkpoint, loop, optim, state
from jaxseg.train.loop import train
from jaxseg.train.optim import make_optimizer, poly_schedule
from jaxseg.train.state import (ADV_MODES, TrainState, adversary, compile_step, create_state,
                                make_train_step)

__all__ = ["checkpoint", "loop", "optim", "state", "train", "make_optimizer", "poly_schedule",
           "ADV_MODES", "TrainState", "adversary", "compile_step", "create_state",
           "make_train_step"]
