"""An offline CLIP tokenizer for the demo diffusion model.

Stable Diffusion reads prompts through CLIP's byte-level BPE tokenizer (49,408 tokens, 77 token
positions). Its vocabulary files come from the model hub, which the project's machines cannot
reach, so the demo generator writes its own ``vocab.json`` + ``merges.txt`` in the same format and
loads them with the stock ``transformers.CLIPTokenizer``:

- the base vocabulary is the 256 byte symbols of byte-level BPE, each also with CLIP's end-of-word
  marker ``</w>``, so every text still tokenizes (unknown words fall apart into letters);
- merges are added for a word list (the class names, the prompt template's words, the condition
  words and every word of the demo prior's captions) so that each listed word becomes ONE token,
  as "road" or "foggy" are in the real CLIP vocabulary;
- ``<|startoftext|>`` / ``<|endoftext|>`` frame the sequence and ``<|endoftext|>`` pads it to 77, as
  in Stable Diffusion 1.5's tokenizer.

Decisions left open by the references: a word is built by left-to-right prefix merges
(``r o`` -> ``ro``, ``ro a`` -> ``roa``, ``roa d</w>`` -> ``road</w>``). BPE applies the lowest-ranked
merge present anywhere in a word first, so a short word's first merge could split a longer word
that contains it ("rain" inside "train"); longer words are therefore ranked first, and
``build_tokenizer`` checks that every listed word really is one token (``TokenizerError``
otherwise).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from transformers import CLIPTokenizer

from flexseg.io import atomic_path
from flexseg.labels import CLASS_NAMES

MAX_LENGTH = 77
BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
END_OF_WORD = "</w>"

# The words of the generation prompt ("A city street scene with {classes}, in {condition}
# weather.") and of the condition vocabulary (DGInStyle's weather words plus the plain names).
PROMPT_WORDS: tuple[str, ...] = (
    "a",
    "city",
    "street",
    "scene",
    "with",
    "in",
    "weather",
    "foggy",
    "rainy",
    "snowy",
    "sunny",
    "night",
    "fog",
    "rain",
    "snow",
    "standard",
)

# CLIP's pre-tokenizer splits text into runs of letters; only those can become word tokens.
_WORD = re.compile(r"[^\W\d_]+")


class TokenizerError(ValueError):
    """The built tokenizer does not keep a listed word whole."""


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE, in byte order.

    Bytes that print as themselves keep their character; the rest (controls, space, a few
    Latin-1 gaps) are moved to code points from 256 on, in byte order.
    """
    printable = (
        set(range(ord("!"), ord("~") + 1))
        | set(range(ord("\u00a1"), ord("\u00ac") + 1))
        | set(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    symbols = []
    shifted = 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def default_words() -> list[str]:
    """The class-name words and the prompt words, each meant to be one token."""
    return words_of([*CLASS_NAMES, *PROMPT_WORDS])


def words_of(texts: Iterable[str]) -> list[str]:
    """The distinct lowercase letter runs of ``texts`` (what CLIP's pre-tokenizer yields), sorted."""
    found: set[str] = set()
    for text in texts:
        found.update(m.group(0) for m in _WORD.finditer(text.lower()))
    return sorted(found)


def word_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """BPE merges that build each word as one token: longest words first, left to right.

    Every word must be pure ASCII letters: a non-ASCII letter is several bytes in byte-level BPE
    and would need byte-symbol merges this builder does not write.
    """
    merges: list[tuple[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for word in sorted(set(words), key=lambda w: (-len(w), w)):
        if not re.fullmatch(r"[a-z]+", word):
            raise TokenizerError(
                f"tokenizer word {word!r}: only lowercase ASCII letters can be made one token"
            )
        for end in range(2, len(word) + 1):
            left = word[: end - 1]
            right = word[end - 1] + (END_OF_WORD if end == len(word) else "")
            pair = (left, right)
            if pair not in seen:
                seen.add(pair)
                merges.append(pair)
    return merges


def vocabulary(merges: list[tuple[str, str]]) -> dict[str, int]:
    """Byte symbols, byte symbols with ``</w>``, every merge result, then the two specials."""
    vocab: dict[str, int] = {}
    symbols = byte_symbols()
    for token in [*symbols, *(s + END_OF_WORD for s in symbols)]:
        vocab[token] = len(vocab)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab


def write_vocab_files(folder: str | Path, words: Iterable[str]) -> tuple[Path, Path]:
    """Write ``vocab.json`` and ``merges.txt`` (CLIP's formats) for ``words`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    merges = word_merges(words)
    vocab_path = folder / "vocab.json"
    merges_path = folder / "merges.txt"
    with atomic_path(vocab_path) as tmp:
        tmp.write_text(json.dumps(vocabulary(merges), ensure_ascii=False))
    with atomic_path(merges_path) as tmp:
        tmp.write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), "utf-8")
    return vocab_path, merges_path


def build_tokenizer(folder: str | Path, words: Iterable[str] = ()) -> CLIPTokenizer:
    """Write a CLIP tokenizer into ``folder`` (loadable with ``CLIPTokenizer.from_pretrained``).

    ``words`` are made single tokens in addition to ``default_words()``. The folder holds the
    vocabulary files and the files ``save_pretrained`` writes, so both tokenizer back ends of
    transformers can read it.
    """
    folder = Path(folder)
    all_words = sorted(set(default_words()) | set(words_of(words)))
    vocab_path, merges_path = write_vocab_files(folder, all_words)
    tokenizer = CLIPTokenizer(
        vocab=str(vocab_path), merges=str(merges_path), model_max_length=MAX_LENGTH
    )
    check_single_tokens(tokenizer, all_words)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def check_single_tokens(tokenizer: CLIPTokenizer, words: Iterable[str]) -> None:
    """Raise TokenizerError naming every word that does not encode to exactly one token."""
    split = {}
    for word in words:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if len(ids) != 1:
            split[word] = tokenizer.convert_ids_to_tokens(ids)
    if split:
        raise TokenizerError(f"words not kept as one token by the built tokenizer: {split}")


def tokenize(tokenizer: CLIPTokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt, padded with ``<|endoftext|>`` / truncated to 77 like SD's."""
    return tokenizer(
        prompts, padding="max_length", max_length=MAX_LENGTH, truncation=True
    ).input_ids
