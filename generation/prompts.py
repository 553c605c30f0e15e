"""Text prompts of the generator (dginstyle_generation.md §1.6).

The class part lists every class present in the label crop, in train-id order, joined by spaces;
a single pixel counts, void does not. A "standard" job's prompt is that bare list; an adverse job's
is the style template, by default "A city street scene with {classes}, in {condition} weather.",
with the condition's word (foggy, rainy, snowy, night; "in night weather" is DGInStyle's phrase).

Decisions: a crop with no class at all has no prompt (an error: an RCS crop always holds its
class); a template must use exactly the ``{classes}`` and ``{condition}`` fields.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

import numpy as np

from flexseg.labels import CLASS_NAMES, NUM_CLASSES

STANDARD = "standard"
ADVERSE_CONDITIONS = ("fog", "rain", "snow", "night")
CONDITIONS = (STANDARD, *ADVERSE_CONDITIONS)


def class_list(label_crop: np.ndarray) -> str:
    """Names of the train ids present in ``label_crop``, in train-id order, space-joined."""
    present = np.unique(label_crop)
    return " ".join(CLASS_NAMES[int(c)] for c in present if c < NUM_CLASSES)


def check_template(template: str) -> None:
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    if fields != {"classes", "condition"}:
        raise ValueError(
            f"prompt template {template!r} must use the fields {{classes}} and {{condition}} "
            f"exactly, found {sorted(fields)}"
        )


def make_prompt(classes: str, condition: str, template: str, words: Mapping[str, str]) -> str:
    """The prompt of one job: the class list, styled by ``template`` for adverse conditions."""
    if not classes.strip():
        raise ValueError("a prompt needs at least one class name; the crop holds none")
    if condition == STANDARD:
        return classes
    if condition not in words:
        raise ValueError(
            f"no prompt word for condition {condition!r} (generation.prompt.condition_words has "
            f"{sorted(words)}; known conditions: {', '.join(CONDITIONS)})"
        )
    check_template(template)
    return template.format(classes=classes, condition=words[condition])
