"""Every `snakemake ...` line the README, the docs and the config comments show runs as written.

Each is dry-run (`-n` added) from a folder that looks like a checkout with the datasets in place,
so a misplaced target (`--configfile a.yaml all` reads `all` as a config file) or a stale path
fails here instead of on a user's machine.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_workflow import REPO, fake_real_tree

SOURCES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    *sorted((REPO / "config").rglob("*.yaml")),
    *sorted((REPO / "workflow" / "profiles").rglob("*.yaml")),
]
# `snakemake ...` inside backticks, or alone on a line of a code block / YAML comment; a
# trailing `# comment` is not part of the command.
INLINE = re.compile(r"`(snakemake [^`]*)`")
LINE = re.compile(r"^\s*(?:#\s*)?(snakemake\s[^#`]*)")
# Placeholders a reader fills in and commands that need a finished run.
SKIP = ("<", "...", "--report")


def documented_commands() -> list[tuple[str, str]]:
    found: dict[str, str] = {}
    for path in SOURCES:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            hits = INLINE.findall(line) or LINE.findall(line)
            for command in hits:
                command = " ".join(command.split())
                if not any(s in command for s in SKIP):
                    found.setdefault(command, f"{path.relative_to(REPO)}:{number}")
    return sorted((where, command) for command, where in found.items())


COMMANDS = documented_commands()


def test_the_documents_show_commands():
    assert len(COMMANDS) >= 8, COMMANDS


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A working folder like the repository's root: the workflow, configs, datasets on disk."""
    root = tmp_path_factory.mktemp("checkout")
    for name in ("Snakefile", "config", "workflow", "profiles", "flexseg", "generation"):
        (root / name).symlink_to(REPO / name)
    fake_real_tree(root)
    (root / "my_eval.yaml").write_text("evaluation: {stride: 32}\n")
    return root


@pytest.mark.parametrize("where, command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_a_documented_command_runs_as_written(checkout, where, command):
    words = shlex.split(command)
    assert words[0] == "snakemake"
    argv = [sys.executable, "-m", "snakemake", "-n", *words[1:]]
    proc = subprocess.run(
        argv, cwd=checkout, capture_output=True, text=True, timeout=300,
        env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(checkout)},
    )  # fmt: skip
    assert proc.returncode == 0, (
        f"{where}: `{command}` failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
