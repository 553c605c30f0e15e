"""Text prompts of the generator and captions of the demo prior (dginstyle_generation.md §1.6).

The class part lists every class present in the label, in train-id order, joined by spaces; a
single pixel counts, void does not. A styled prompt is the template, by default "A city street
scene with {classes}, in {condition} weather.", with a weather word; an unstyled one is the bare
class list.

Two schemes choose each job's condition and word (``generation.prompt.scheme``):

* ``paper`` (the default): FLEX-Seg names its conditions (standard, fog, rain, snow, night);
  the job table apportions them exactly to ``generation.jobs.conditions``; a standard job gets
  the bare list, an adverse one the template with its condition's word (foggy, rainy, snowy,
  night; "in night weather" is DGInStyle's phrase).
* ``dginstyle``: DGInStyle's generation script flips a fair coin for the template, then draws
  the word uniformly from snowy / rainy / sunny / foggy / night, so about half the prompts are
  bare, 40 % adverse and 10 % say "sunny" (``dginstyle_choices``). A "sunny" job's condition is
  standard (no adverse weather); the adverse words are ``condition_words``' (by default the
  same five words). DGInStyle draws with numpy's unseeded global generator; here the job
  table's seeded one draws them, so the table stays reproducible.

Decisions: a label with no class at all has no prompt (an error: an RCS crop always holds its
class); a template must use exactly the ``{classes}`` and ``{condition}`` fields.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from flexseg.config import ConfigError
from flexseg.labels import CLASS_NAMES, CONDITIONS, NUM_CLASSES, STANDARD

SCHEMES = ("paper", "dginstyle")
# DGInStyle's weather list, in its order, as (condition, word); the words of the adverse
# conditions come from generation.prompt.condition_words.
DGINSTYLE_WEATHER = (
    ("snow", None),
    ("rain", None),
    (STANDARD, "sunny"),
    ("fog", None),
    ("night", None),
)
DGINSTYLE_STYLED_SHARE = 0.5  # the fair coin


@dataclass(frozen=True)
class PromptChoice:
    """A job's condition and weather word (None: the bare class list)."""

    condition: str
    word: str | None


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


def _word(condition: str, words: Mapping[str, str]) -> str:
    if condition not in words:
        raise ConfigError(
            f"no prompt word for condition {condition!r} (generation.prompt.condition_words has "
            f"{sorted(words)}; known conditions: {', '.join(CONDITIONS)})"
        )
    return words[condition]


def paper_choice(condition: str, words: Mapping[str, str]) -> PromptChoice:
    """The paper scheme: standard is the bare list, an adverse condition its word."""
    return PromptChoice(condition, None if condition == STANDARD else _word(condition, words))


def dginstyle_choices(
    count: int, rng: np.random.Generator, words: Mapping[str, str]
) -> list[PromptChoice]:
    """DGInStyle's scheme for ``count`` jobs: a fair coin per job for the template, then one of
    its five weather words uniformly (see the module doc)."""
    styled = rng.random(count) < DGINSTYLE_STYLED_SHARE
    picks = rng.integers(len(DGINSTYLE_WEATHER), size=count)
    out = []
    for on, k in zip(styled, picks, strict=True):
        condition, word = DGINSTYLE_WEATHER[int(k)]
        if not on:
            out.append(PromptChoice(STANDARD, None))
        else:
            out.append(PromptChoice(condition, word or _word(condition, words)))
    return out


def render_prompt(classes: str, choice: PromptChoice, template: str) -> str:
    """The prompt of one image: the class list, styled by ``template`` when it has a word."""
    if not classes.strip():
        raise ValueError("a prompt needs at least one class name; the label holds none")
    if choice.word is None:
        return classes
    check_template(template)
    return template.format(classes=classes, condition=choice.word)


def make_prompt(classes: str, condition: str, template: str, words: Mapping[str, str]) -> str:
    """The paper scheme's prompt of one image (the demo prior's captions use it too)."""
    return render_prompt(classes, paper_choice(condition, words), template)
