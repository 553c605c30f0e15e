"""GPUs of their own for the GPU jobs of a workflow run on one machine, without a cluster.

Snakemake limits jobs by ``resources: gpu=N`` only against a declared total, and never tells a
job which GPU is its own (snakemake/snakemake#281). The workflow (``workflow/rules/gpus.smk``)
declares the total from :func:`usable_gpus`, found without initialising CUDA in the Snakemake
process, and hands them to its jobs in ``FLEXSEG_GPU_IDS``; every GPU job then runs through the
wrapper of this module::

    python -m flexseg.gpu_slots run --count N [--ids 0,1,2] -- COMMAND [ARGS...]

which claims ``N`` free ids (``--ids``, else ``FLEXSEG_GPU_IDS``, else the GPUs found as the
workflow finds them), sets ``CUDA_VISIBLE_DEVICES`` to them and *execs* ``COMMAND`` in
its own process. An id is claimed by an exclusive ``flock`` on ``<lock folder>/<id>.lock``. The
lock belongs to the open file, which ``COMMAND`` inherits across the exec, so it is held exactly
while the job's process lives, and the kernel drops it when that process ends in any way (a
``kill -9`` included). No supervising process stays behind: a signal sent to the job reaches
``COMMAND`` itself. With no free id the wrapper says so in the job's log and waits.

The lock folder is ``/tmp/flexseg-gpu-slots`` (``FLEXSEG_GPU_LOCK_DIR`` replaces it), one for
the whole machine: every checkout and every user of the machine claims its GPUs there, so two
workflows on one box share the GPUs (each keeps to its own limit; a job finding every id taken
by the other waits). Inside a SLURM allocation (``SLURM_JOB_ID`` set) device numbers are the
allocation's own, so its locks go to ``slurm-<job id>/`` below the folder. Ids are compared as
text: workflows that name one GPU differently (``0`` and ``GPU-<uuid>``) do not see each
other's claims.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_LOCK_DIR = Path("/tmp/flexseg-gpu-slots")
LOCK_DIR_ENV = "FLEXSEG_GPU_LOCK_DIR"
IDS_ENV = "FLEXSEG_GPU_IDS"
_ENTRY = re.compile(r"^(\d+|(GPU|MIG)-\S+)$")  # what CUDA_VISIBLE_DEVICES may list
_SMI_GPU = re.compile(r"^GPU (\d+):")
_SMI_MIG = re.compile(r"^\s+MIG .*\(UUID: (MIG-[^)\s]+)\)")
_CHOOSE = "set the config key gpus (0 for none, or a list of ids) or CUDA_VISIBLE_DEVICES"


class GpuError(RuntimeError):
    """The GPUs cannot be found or claimed; the message says which setting or tool failed."""


def parse_visible_devices(value: str) -> list[str]:
    """The entries of a ``CUDA_VISIBLE_DEVICES`` value, read the way CUDA reads them: a comma
    list of indices or GPU-/MIG- UUIDs, ending at the first entry that is neither ("", "-1" and
    "NoDevFiles" hide every GPU)."""
    ids: list[str] = []
    for entry in value.split(","):
        entry = entry.strip()
        if not _ENTRY.match(entry):
            break
        ids.append(entry)
    return ids


def parse_nvidia_smi(listing: str) -> list[str]:
    """GPU ids from ``nvidia-smi -L``: each GPU's index, or the UUIDs of its MIG instances when
    it is split (one CUDA process uses one MIG instance, named by its UUID)."""
    gpus: list[tuple[str, list[str]]] = []
    for line in listing.splitlines():
        if m := _SMI_GPU.match(line):
            gpus.append((m.group(1), []))
        elif (m := _SMI_MIG.match(line)) and gpus:
            gpus[-1][1].append(m.group(1))
    return [gpu for index, migs in gpus for gpu in (migs or [index])]


def nvidia_smi_gpus(
    which: Callable[[str], str | None] = shutil.which,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> list[str]:
    """The driver's GPUs; no ``nvidia-smi`` on the PATH means no GPUs."""
    tool = which("nvidia-smi")
    if tool is None:
        return []
    try:
        proc = run([tool, "-L"], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as err:
        raise GpuError(f"`{tool} -L` did not answer within 60 s; {_CHOOSE}") from err
    out = f"{proc.stdout}\n{proc.stderr}".strip()
    if proc.returncode != 0:
        if "No devices were found" in out:
            return []
        raise GpuError(f"`{tool} -L` failed (exit {proc.returncode}): {out}; {_CHOOSE}")
    return parse_nvidia_smi(proc.stdout)


def usable_gpus(
    setting: Any,
    env: Mapping[str, str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> list[str]:
    """The GPU ids a workflow on this machine may hand to its jobs, from the config key ``gpus``:
    a list of ids as given; 0 for none; ``auto`` for ``CUDA_VISIBLE_DEVICES`` when it is set,
    else every GPU ``nvidia-smi -L`` lists. Nothing here initialises CUDA."""
    env = os.environ if env is None else env
    if setting == "auto":
        if "CUDA_VISIBLE_DEVICES" in env:
            return parse_visible_devices(env["CUDA_VISIBLE_DEVICES"])
        return nvidia_smi_gpus(which, run)
    if setting == 0 and not isinstance(setting, bool):
        return []
    if isinstance(setting, list) and setting:
        ids = [str(i) for i in setting]
        bad = [i for i in ids if not re.fullmatch(r"[^,\s]+", i)]
        if bad or len(set(ids)) != len(ids):
            raise GpuError(f"gpus: ids must be distinct and free of commas and spaces, got {ids}")
        return ids
    raise GpuError(f"gpus: expected auto, 0 or a list of ids, got {setting!r}")


# ---------------------------------------------------------------------------------------------
# Claiming


def lock_dir(env: Mapping[str, str] | None = None) -> Path:
    """The machine's lock folder (see the module docstring)."""
    env = os.environ if env is None else env
    if env.get(LOCK_DIR_ENV):
        return Path(env[LOCK_DIR_ENV])
    if env.get("SLURM_JOB_ID"):
        return DEFAULT_LOCK_DIR / f"slurm-{env['SLURM_JOB_ID']}"
    return DEFAULT_LOCK_DIR


def _ensure_folder(folder: Path) -> None:
    """Create the lock folder open to every user (sticky, like /tmp): another user's workflow
    must be able to add lock files beside ours."""
    for level in [*reversed(folder.parents), folder]:
        if level.exists():
            continue
        try:
            level.mkdir()
        except FileExistsError:
            continue
        if level == folder or level == DEFAULT_LOCK_DIR:
            os.chmod(level, 0o1777)
    if not stat.S_ISDIR(os.lstat(folder).st_mode):
        raise GpuError(f"GPU lock folder {folder} is not a folder (a link or a file is there)")


def _lock_path(folder: Path, gpu: str) -> Path:
    return folder / (re.sub(r"[^A-Za-z0-9_.-]", "_", gpu) + ".lock")


def _open_lock_file(path: Path) -> int:
    """A descriptor of ``path``, created if missing. The open of an existing file never asks
    for O_CREAT: with fs.protected_regular (systemd's default) the kernel refuses O_CREAT on
    another user's file in a sticky folder, even when the file exists."""
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(3):
        try:
            try:
                return os.open(path, os.O_RDWR | flags)
            except PermissionError:  # another user's lock file: a read-only descriptor locks too
                return os.open(path, os.O_RDONLY | flags)
        except FileNotFoundError:
            try:
                return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | flags, 0o666)
            except FileExistsError:
                continue  # another job created it just now: open that one
        except PermissionError as err:
            raise GpuError(f"cannot open the GPU lock file {path}: {err}") from err
    raise GpuError(f"cannot open the GPU lock file {path}: it keeps appearing and vanishing")


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding ``path``'s exclusive lock, or None while another holds it."""
    fd = _open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _write_holder(fd: int) -> None:
    """Who holds the lock, for the message of a job waiting for it (best effort)."""
    try:
        os.ftruncate(fd, 0)
        note = f"pid {os.getpid()} on {socket.gethostname()} in {os.getcwd()}\n"
        os.pwrite(fd, note.encode(), 0)
    except OSError:
        pass  # a read-only descriptor (another user's file): the lock itself is what counts


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "unknown holder"
    except OSError:
        return "unknown holder"


@dataclass(frozen=True)
class Claim:
    """GPU ids held by this process, with the descriptors that hold their locks."""

    ids: tuple[str, ...]
    fds: tuple[int, ...]
    waited_s: float


def claim(
    count: int,
    ids: Sequence[str],
    folder: Path,
    poll_s: float = 2.0,
    log: Callable[[str], None] = print,
) -> Claim:
    """Lock ``count`` of ``ids`` (the lowest free ones), waiting until that many are free.
    All or nothing each round: a job needing 4 never sits on 2 while it waits. A job of several
    GPUs takes whole GPUs only: CUDA shows a process one MIG instance at most."""
    if count > 1:
        ids = whole_gpus(ids)
    if count < 1 or count > len(ids):
        have = f"the ids are {','.join(ids)}" if ids else "no GPU ids were given or found"
        whole = " (whole GPUs: a multi-GPU job cannot use MIG instances)" if count > 1 else ""
        raise GpuError(f"a job needs {count} GPU(s) but {have}{whole}")
    _ensure_folder(folder)
    start = time.monotonic()
    told = False
    while True:
        held: dict[str, int] = {}
        for gpu in ids:
            fd = _try_lock(_lock_path(folder, gpu))
            if fd is not None:
                held[gpu] = fd
                if len(held) == count:
                    for fd in held.values():
                        _write_holder(fd)
                    return Claim(tuple(held), tuple(held.values()), time.monotonic() - start)
        for fd in held.values():
            os.close(fd)
        if not told:
            busy = "; ".join(f"{g}: {_holder(_lock_path(folder, g))}" for g in ids if g not in held)
            log(
                f"gpu_slots: waiting for {count} free GPU(s) of {','.join(ids)} "
                f"(in use: {busy}; locks in {folder})"
            )
            told = True
        time.sleep(poll_s)


def whole_gpus(ids: Sequence[str]) -> list[str]:
    """The ids that name a whole GPU (not a MIG instance)."""
    return [gpu for gpu in ids if not gpu.startswith("MIG-")]


def child_environment(ids: Sequence[str], env: Mapping[str, str]) -> dict[str, str]:
    """The job's environment: its GPUs only. Ids the workflow took from nvidia-smi (or the
    ``gpus`` key) count in nvidia-smi's PCI bus order, so the job numbers them that way; ids it
    took from the caller's own CUDA_VISIBLE_DEVICES keep the caller's order."""
    out = dict(env)
    if "CUDA_VISIBLE_DEVICES" not in env:
        out.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    out["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
    return out


def run(
    command: Sequence[str], count: int, ids: Sequence[str], folder: Path, poll_s: float
) -> None:
    """Claim, then replace this process by ``command`` (returns only by raising)."""

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    got = claim(count, ids, folder, poll_s=poll_s, log=log)
    waited = f" after waiting {got.waited_s:.0f} s" if got.waited_s >= 1 else ""
    log(
        f"gpu_slots: CUDA_VISIBLE_DEVICES={','.join(got.ids)} for this job (GPUs here: "
        f"{','.join(ids)}){waited}"
    )
    for fd in got.fds:
        os.set_inheritable(fd, True)
    try:
        os.execvpe(command[0], list(command), child_environment(got.ids, os.environ))
    except OSError as err:
        raise GpuError(f"cannot start {command[0]!r}: {err}") from err


# ---------------------------------------------------------------------------------------------
# Command line

USAGE = """\
usage: python -m flexseg.gpu_slots run --count N [--ids ID,...] [--lock-dir DIR] [--poll S] -- COMMAND...
       python -m flexseg.gpu_slots list [--gpus auto|0|ID,ID...]

run:   claim N of the ids (default: $FLEXSEG_GPU_IDS, else the GPUs found), waiting while they
       are taken, set CUDA_VISIBLE_DEVICES and exec COMMAND; the claim ends with COMMAND's process.
list:  the GPUs a workflow here would use and who holds each one now.
"""


def _options(words: Sequence[str], known: Sequence[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    it = iter(words)
    for word in it:
        if word not in known:
            raise GpuError(f"unknown option {word!r}\n{USAGE}")
        value = next(it, None)
        if value is None:
            raise GpuError(f"{word} needs a value\n{USAGE}")
        opts[word] = value
    return opts


def _list(opts: Mapping[str, str]) -> None:
    setting: Any = opts.get("--gpus", "auto")
    if setting not in ("auto", "0"):
        setting = setting.split(",")
    ids = usable_gpus(0 if setting == "0" else setting)
    folder = lock_dir()
    print(f"GPUs: {','.join(ids) or 'none'} (locks in {folder})")
    for gpu in ids:
        path = _lock_path(folder, gpu)
        fd = _try_lock(path) if folder.is_dir() else None
        if fd is not None or not path.exists():
            print(f"  {gpu}: free")
        else:
            print(f"  {gpu}: in use by {_holder(path)}")
        if fd is not None:
            os.close(fd)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["list"]:
            _list(_options(argv[1:], ["--gpus"]))
            return 0
        if argv[:1] != ["run"] or "--" not in argv:
            raise GpuError(USAGE)
        split = argv.index("--")
        opts = _options(argv[1:split], ["--count", "--ids", "--lock-dir", "--poll"])
        command = argv[split + 1 :]
        if not command or "--count" not in opts:
            raise GpuError(f"run needs --count and a command after --\n{USAGE}")
        try:
            count, poll_s = int(opts["--count"]), float(opts.get("--poll", "2"))
        except ValueError as err:
            raise GpuError(f"--count takes an integer and --poll seconds: {err}") from err
        given = opts.get("--ids", os.environ.get(IDS_ENV))
        ids = usable_gpus("auto") if given is None else [i for i in given.split(",") if i]
        folder = Path(opts["--lock-dir"]) if "--lock-dir" in opts else lock_dir()
        run(command, count, ids, folder, poll_s)
    except GpuError as err:
        print(f"gpu_slots: error: {err}", file=sys.stderr, flush=True)
        return 2
    return 0  # not reached: run() execs


if __name__ == "__main__":
    sys.exit(main())
