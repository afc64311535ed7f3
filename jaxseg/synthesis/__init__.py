"""Inpainting (eq. 6) and generation (eq. 7) by descent on the attack kernel: objectives and
start points (objectives.py), the descents and `run` for a Flax model (descent.py), hole masks and
edited targets (edits.py), fill quality metrics (quality.py), and a whole multi-model session
with pictures and metrics (session.py, what synthesize.py runs). See docs/synthesis.md.
"""

from jaxseg.synthesis import descent, edits, objectives, quality, session
from jaxseg.synthesis.edits import changed, paint_class, swap_class
from jaxseg.synthesis.objectives import (KINDS, PENALTIES, RECIPES, channel_mean, default_radius,
                                         default_step_size, fill_hole, generate_objective,
                                         inpaint_objective, mean_image, penalty_value, scaled,
                                         start_point)
from jaxseg.synthesis.descent import (MIN_SIZE, RULES, Options, Synthesis, check_images,
                                  check_options, compiled_programs, generate, inpaint, run)
from jaxseg.synthesis.session import Request, synthesize

__all__ = ["descent", "edits", "objectives", "quality", "session", "changed", "paint_class",
           "swap_class", "KINDS", "PENALTIES", "RECIPES", "channel_mean", "default_radius",
           "default_step_size", "fill_hole", "generate_objective", "inpaint_objective",
           "mean_image", "penalty_value", "scaled", "start_point", "MIN_SIZE", "RULES", "Options",
           "Synthesis", "check_images", "check_options", "compiled_programs", "generate",
           "inpaint", "run", "Request", "synthesize"]
