"""The built-in prompt sets: a reference family's training prompts, or a generic set for other models
(calibration, distillation, eval)."""

from __future__ import annotations

# Prompts for models that bring no prompt set of their own (calibration, eval).
GENERIC_PROMPTS = (
    "a photograph of an astronaut riding a horse",
    "a red sports car parked on a city street at night",
    "a bowl of fruit on a wooden table, oil painting",
    "a snowy mountain landscape at sunrise",
    "portrait of an old man with a beard, studio lighting",
    "a cat sleeping on a windowsill, watercolor",
    "a futuristic city skyline with flying cars",
    "a lighthouse on a cliff during a storm",
)


PROMPT_POOL = 1024  # training prompts a reference family offers calibration and distillation (at most)


def calibration_prompt_pool(family: str, size: int = 64) -> tuple[str, ...]:
    """The built-in calibration prompts of a model family: up to `size` distinct training prompts of a reference
    family (a larger pool starts with the smaller one), or the generic set."""
    from sdopt.reference.families import family as reference_family

    reference = reference_family(family)
    return tuple(reference.calibration_prompts(size)) if reference else GENERIC_PROMPTS
