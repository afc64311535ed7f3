"""Projected gradient steps on input pixels: the one kernel of jaxseg, its segmentation losses
and named attacks (see docs/attacks.md).

    spec = jaxseg.attacks.make("pgd", eps=8/255, steps=10)
    x_adv = jaxseg.attacks.attack(spec, model.apply, variables, images, labels, key).x
"""

from jaxseg.attacks import kernel, losses, presets
from jaxseg.attacks.kernel import (NORMS, STARTS, STEP_RULES, UPDATES, AttackResult, Evaluation,
                                   KernelConfig, apgd_checkpoints, apgd_update, make_init,
                                   make_project, make_step, optimize)
from jaxseg.attacks.presets import (BN_MODES, PRESETS, Attack, Ensemble, attack, check_hyper,
                                    check_inputs, compiled_programs, make, model_logits,
                                    num_classes, segmentation_objective)
from jaxseg.labels import check_labels

__all__ = ["kernel", "losses", "presets", "NORMS", "STARTS", "STEP_RULES", "UPDATES",
           "AttackResult", "Evaluation", "KernelConfig", "apgd_checkpoints", "apgd_update",
           "make_init", "make_project", "make_step", "optimize", "BN_MODES", "PRESETS", "Attack",
           "Ensemble", "attack", "check_hyper", "check_inputs", "check_labels",
           "compiled_programs", "make", "model_logits", "num_classes", "segmentation_objective"]
