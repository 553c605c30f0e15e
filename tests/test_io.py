"""Whole-or-nothing writes: temporaries that a killed writer leaves behind are cleaned up."""

from __future__ import annotations

from pathlib import Path

import pytest

from flexseg.io import (
    atomic_folder,
    atomic_path,
    remove_stale_temporaries,
    remove_unlisted,
    temporary_name,
    write_text,
)


def leftover(final: Path, random: str = "ab12cd34") -> Path:
    prefix, suffix = temporary_name(final)
    tmp = final.parent / f"{prefix}{random}{suffix}"
    tmp.write_text("half")
    return tmp


def test_a_file_path_removes_only_its_own_temporaries(tmp_path):
    mine = leftover(tmp_path / "combined.csv")
    other_job = leftover(tmp_path / "source.csv")  # a sibling output: possibly being written now
    longer_stem = leftover(tmp_path / "combined.best.csv")
    plain = tmp_path / ".combined.notes"  # not a temporary's name
    plain.write_text("keep")
    assert remove_stale_temporaries(tmp_path / "combined.csv") == [mine]
    assert other_job.exists() and longer_stem.exists() and plain.exists()


def test_an_owned_folder_removes_every_temporary_and_nothing_else(tmp_path):
    temps = [leftover(tmp_path / "last.pt"), leftover(tmp_path / "loss_log.csv", "zz_99yy0")]
    keep = [tmp_path / "last.pt", tmp_path / ".hidden", tmp_path / "x.tmp.pt"]
    for p in keep:
        p.write_text("keep")
    (tmp_path / "sub").mkdir()
    nested = leftover(tmp_path / "sub" / "a.png")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(temps)
    assert all(p.exists() for p in keep) and nested.exists()
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_atomic_path_clears_the_stale_temporaries_of_its_path(tmp_path):
    target = tmp_path / "table.csv"
    stale = leftover(target)
    write_text(target, "a,b\n")
    assert target.read_text() == "a,b\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]
    assert not stale.exists()


def test_atomic_path_leaves_nothing_when_the_write_fails(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_folder_replaces_the_folder_whole_or_not_at_all(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(out) as tmp:
        (tmp / "new.txt").write_text("new")
        raise RuntimeError("killed")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with atomic_folder(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_folder_clears_the_folders_a_killed_writer_left(tmp_path):
    out = tmp_path / "prior"
    prefix, suffix = temporary_name(out)
    stale = tmp_path / f"{prefix}ab12cd34{suffix}"
    stale.mkdir()
    (stale / "unet.bin").write_text("half")
    other = tmp_path / f"{temporary_name(tmp_path / 'controlnet')[0]}ab12cd34.tmp"
    other.mkdir()
    with atomic_folder(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert not stale.exists() and other.exists() and (out / "new.txt").exists()
    assert remove_stale_temporaries(tmp_path) == [other]


def test_remove_unlisted_leaves_exactly_the_listed_files(tmp_path):
    keep = [tmp_path / "a.png", tmp_path / "sub" / "b.png"]
    stale = [tmp_path / "old.png", tmp_path / "gone" / "c.png"]
    for path in keep + stale:
        path.parent.mkdir(exist_ok=True)
        path.write_text("x")
    assert sorted(remove_unlisted(tmp_path, set(keep))) == sorted(stale)
    assert sorted(tmp_path.rglob("*")) == sorted([*keep, tmp_path / "sub"])
    assert remove_unlisted(tmp_path / "missing", ()) == []
