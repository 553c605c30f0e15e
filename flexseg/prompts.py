"""Text prompts of the generator and captions of the demo prior (dginstyle_generation.md §1.6).

The class part lists every class present in the label, in train-id order, joined by spaces; a
single pixel counts, void does not. A "standard" image's prompt is that bare list; an adverse
one's is the style template, by default "A city street scene with {classes}, in {condition}
weather.", with the condition's word (foggy, rainy, snowy, night; "in night weather" is
DGInStyle's phrase).

Decisions: a label with no class at all has no prompt (an error: an RCS crop always holds its
class); a template must use exactly the ``{classes}`` and ``{condition}`` fields.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

import numpy as np

from flexseg.config import ConfigError
from flexseg.labels import CLASS_NAMES, CONDITIONS, NUM_CLASSES, STANDARD


def class_list(label: np.ndarray) -> str:
    """Names of the train ids present in ``label``, in train-id order, space-joined."""
    present = np.unique(label)
    return " ".join(CLASS_NAMES[int(c)] for c in present if c < NUM_CLASSES)


def check_template(template: str) -> None:
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    if fields != {"classes", "condition"}:
        raise ConfigError(
            f"prompt template {template!r} must use the fields {{classes}} and {{condition}} "
            f"exactly, found {sorted(fields)}"
        )


def make_prompt(classes: str, condition: str, template: str, words: Mapping[str, str]) -> str:
    """The prompt of one image: the class list, styled by ``template`` for adverse conditions."""
    if not classes.strip():
        raise ValueError("a prompt needs at least one class name; the label holds none")
    if condition == STANDARD:
        return classes
    if condition not in words:
        raise ConfigError(
            f"no prompt word for condition {condition!r} (generation.prompt.condition_words has "
            f"{sorted(words)}; known conditions: {', '.join(CONDITIONS)})"
        )
    check_template(template)
    return template.format(classes=classes, condition=words[condition])
