"""GPU jobs on a machine without a cluster: finding the GPUs, the lock-per-id wrapper, and the
workflow's limit, all on a CPU with simulated GPU ids (stand-in jobs record what they were given).

Every process signalled here is one this file started (a Popen's own pid); every lock lives in
the test's own folder, never in the machine's /tmp/flexseg-gpu-slots.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_workflow import REPO, SNAKEMAKE, fake_real_tree, job_counts, snakemake

from flexseg import gpu_slots
from flexseg.gpu_slots import GpuError

# A stand-in GPU job: records its pid, CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER when it starts
# (<out>.start.json), waits until `need` jobs have started (or 20 s), holds for `hold` seconds
# (forever when negative), then records its end (<out>.json).
STAND_IN = """\
import json, os, sys, time
out, need, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
folder = os.path.dirname(out)
record = {"pid": os.getpid(), "start": time.monotonic(),
          "ids": os.environ.get("CUDA_VISIBLE_DEVICES"), "order": os.environ.get("CUDA_DEVICE_ORDER")}
with open(out + ".start.json.part", "w") as fh:
    json.dump(record, fh)
os.replace(out + ".start.json.part", out + ".start.json")
started = lambda: sum(name.endswith(".start.json") for name in os.listdir(folder))
deadline = time.monotonic() + 20
while started() < need and time.monotonic() < deadline:
    time.sleep(0.02)
record["saw"] = started()
time.sleep(hold if hold >= 0 else 3600)
record["end"] = time.monotonic()
with open(out + ".part", "w") as fh:
    json.dump(record, fh)
os.replace(out + ".part", out)
"""


@pytest.fixture
def stand_in(tmp_path) -> Path:
    path = tmp_path / "stand_in.py"
    path.write_text(STAND_IN)
    return path


def env_for_jobs(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES",)}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", **extra)
    env.pop(gpu_slots.IDS_ENV, None)
    return env


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def assert_no_shared_id(records: list[dict]) -> None:
    for i, a in enumerate(records):
        for b in records[i + 1 :]:
            if a["start"] < b["end"] and b["start"] < a["end"]:  # ran at the same time
                shared = set(a["ids"].split(",")) & set(b["ids"].split(","))
                assert not shared, (a, b)


# ---------------------------------------------------------------------------------------------
# Finding the GPUs (no CUDA anywhere)

SMI = """\
GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0f9e1a2b-0000-0000-0000-000000000000)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-1f9e1a2b-0000-0000-0000-000000000000)
  MIG 3g.40gb     Device  0: (UUID: MIG-aaaaaaaa-0000-0000-0000-000000000000)
  MIG 3g.40gb     Device  1: (UUID: MIG-bbbbbbbb-0000-0000-0000-000000000000)
GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-2f9e1a2b-0000-0000-0000-000000000000)
"""


@pytest.mark.parametrize(
    "value, ids",
    [
        ("0,2,3", ["0", "2", "3"]),
        (" 1 , 0", ["1", "0"]),
        ("", []),
        ("-1", []),
        ("NoDevFiles", []),
        ("0,-1,2", ["0"]),  # CUDA stops at the first invalid entry
        ("GPU-0f9e1a2b,MIG-aaaa", ["GPU-0f9e1a2b", "MIG-aaaa"]),
    ],
)
def test_cuda_visible_devices_is_read_as_cuda_reads_it(value, ids):
    assert gpu_slots.parse_visible_devices(value) == ids


def fake_smi(stdout: str = "", returncode: int = 0, stderr: str = ""):
    def run(cmd, **kwargs):
        assert cmd == ["/fake/nvidia-smi", "-L"]
        return subprocess.CompletedProcess(cmd, returncode, stdout, stderr)

    return (lambda name: "/fake/nvidia-smi"), run


def test_nvidia_smi_listing_gives_indices_and_mig_instances():
    which, run = fake_smi(SMI)
    assert gpu_slots.nvidia_smi_gpus(which, run) == [
        "0",
        "MIG-aaaaaaaa-0000-0000-0000-000000000000",
        "MIG-bbbbbbbb-0000-0000-0000-000000000000",
        "2",
    ]


def test_no_nvidia_smi_or_no_devices_means_no_gpus():
    assert gpu_slots.nvidia_smi_gpus(lambda name: None) == []
    which, run = fake_smi("No devices were found\n", returncode=6)
    assert gpu_slots.nvidia_smi_gpus(which, run) == []


def test_a_failing_nvidia_smi_is_an_error_naming_the_key():
    which, run = fake_smi(
        stderr="Failed to initialize NVML: Driver/library version mismatch", returncode=18
    )
    with pytest.raises(GpuError, match="version mismatch.*gpus"):
        gpu_slots.nvidia_smi_gpus(which, run)


def test_the_config_key_overrides_detection():
    which, run = fake_smi(SMI)
    env = {"CUDA_VISIBLE_DEVICES": "3,1"}
    assert gpu_slots.usable_gpus("auto", env, which, run) == ["3", "1"]
    assert gpu_slots.usable_gpus("auto", {}, which, run)[0] == "0"
    assert gpu_slots.usable_gpus([0, 2, 3], env, which, run) == ["0", "2", "3"]
    assert gpu_slots.usable_gpus(0, env, which, run) == []
    with pytest.raises(GpuError, match="gpus"):
        gpu_slots.usable_gpus([0, 0], env, which, run)


@pytest.mark.parametrize("value", [2, [], [0, 0], ["0,1"], True])
def test_a_bad_gpus_value_is_an_error_naming_the_key(value):
    from flexseg.config import ConfigError, load_config

    assert load_config()["gpus"] == "auto"
    with pytest.raises(ConfigError, match="gpus"):
        load_config(overrides={"gpus": value})


def test_lock_folder_is_per_machine_and_per_slurm_allocation(tmp_path):
    assert gpu_slots.lock_dir({}) == Path("/tmp/flexseg-gpu-slots")
    assert gpu_slots.lock_dir({"SLURM_JOB_ID": "42"}) == Path("/tmp/flexseg-gpu-slots/slurm-42")
    assert gpu_slots.lock_dir({"FLEXSEG_GPU_LOCK_DIR": str(tmp_path)}) == tmp_path


# ---------------------------------------------------------------------------------------------
# The wrapper: six stand-in jobs on three simulated GPUs


def wrapped(stand_in: Path, locks: Path, out: Path, need: int, hold: float, count: int = 1):
    cmd = [
        sys.executable, "-m", "flexseg.gpu_slots", "run", "--count", str(count),
        "--ids", "0,1,2", "--lock-dir", str(locks), "--poll", "0.02", "--",
        sys.executable, str(stand_in), str(out), str(need), str(hold),
    ]  # fmt: skip
    with open(f"{out}.log", "w") as log:  # the child keeps its own copy
        return subprocess.Popen(cmd, stdout=log, stderr=log, env=env_for_jobs())


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_six_jobs_on_three_gpus_and_a_killed_job_frees_its_gpu(tmp_path, stand_in):
    locks, runs = tmp_path / "locks", tmp_path / "runs"
    runs.mkdir()
    # The job that will be killed starts first (it takes GPU 0) and holds until killed; the other
    # five each wait until three jobs have started, so three really run at once.
    hanging = wrapped(stand_in, locks, runs / "hang", need=1, hold=-1)
    started = runs / "hang.start.json"
    wait_for(started.exists, "the first job")
    others = [wrapped(stand_in, locks, runs / f"job{i}", need=3, hold=0.2) for i in range(5)]
    try:
        for proc in others:
            assert proc.wait(timeout=120) == 0
        # A job needing all three GPUs must wait for the hanging one ...
        last = wrapped(stand_in, locks, runs / "all3", need=0, hold=0, count=3)
        wait_for(
            lambda: "waiting for 3 free GPU(s)" in Path(f"{runs}/all3.log").read_text(), "wait"
        )
        assert not (runs / "all3.start.json").exists()
        listing = subprocess.run(
            [sys.executable, "-m", "flexseg.gpu_slots", "list", "--gpus", "0,1,2"],
            env=env_for_jobs(FLEXSEG_GPU_LOCK_DIR=str(locks)), capture_output=True, text=True,
        )  # fmt: skip
        assert f"0: in use by pid {hanging.pid} " in listing.stdout, listing
        # ... and gets them once that job is killed with SIGKILL (by pid: it is our own child).
        assert json.loads(started.read_text())["pid"] == hanging.pid  # exec'd, no wrapper left
        killed_at = time.monotonic()
        os.kill(hanging.pid, signal.SIGKILL)
        assert hanging.wait(timeout=30) == -signal.SIGKILL
        assert last.wait(timeout=30) == 0
    finally:
        for proc in [hanging, *others]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    hang = {**json.loads(started.read_text()), "end": killed_at}
    done = [json.loads((runs / f"job{i}").read_text()) for i in range(5)]
    all3 = json.loads((runs / "all3").read_text())
    records = [hang, *done, all3]
    assert hang["ids"] == "0"
    assert {r["ids"] for r in done} <= {"1", "2"}
    assert all3["ids"] == "0,1,2" and all3["order"] == "PCI_BUS_ID"
    assert all3["start"] > killed_at
    assert max_overlap([(r["start"], r["end"]) for r in records]) == 3
    assert_no_shared_id(records)


def test_a_signal_to_the_job_reaches_the_command(tmp_path):
    """The wrapper execs the command: the job's pid is the command's own."""
    ready, caught = tmp_path / "ready", tmp_path / "caught"
    script = (
        "import pathlib, signal, sys, time\n"
        "def on_term(*_):\n"
        f"    pathlib.Path({str(caught)!r}).write_text('TERM')\n"
        "    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        f"pathlib.Path({str(ready)!r}).write_text('ready')\n"
        "time.sleep(60)\n"
    )
    cmd = [
        sys.executable, "-m", "flexseg.gpu_slots", "run", "--count", "1", "--ids", "5",
        "--lock-dir", str(tmp_path / "locks"), "--", sys.executable, "-c", script,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env_for_jobs(), stderr=subprocess.PIPE, text=True)
    try:
        wait_for(ready.exists, "the command")
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=30) == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert caught.read_text() == "TERM"
    assert "CUDA_VISIBLE_DEVICES=5 for this job" in proc.stderr.read()


def test_more_gpus_than_ids_is_an_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "flexseg.gpu_slots", "run", "--count", "4", "--ids", "0,1",
         "--lock-dir", str(tmp_path), "--", "true"],
        env=env_for_jobs(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "needs 4 GPU(s) but the ids are 0,1" in proc.stderr


def test_a_multi_gpu_job_takes_whole_gpus_only(tmp_path):
    mig = ["MIG-aaaa", "0", "MIG-bbbb", "1"]
    got = gpu_slots.claim(2, mig, tmp_path, log=lambda m: None)
    try:
        assert got.ids == ("0", "1")
    finally:
        for fd in got.fds:
            os.close(fd)
    single = gpu_slots.claim(1, mig, tmp_path, log=lambda m: None)
    assert single.ids == ("MIG-aaaa",)  # one GPU: a MIG instance is as good as a whole GPU
    os.close(*single.fds)
    with pytest.raises(GpuError, match="multi-GPU job cannot use MIG"):
        gpu_slots.claim(3, mig, tmp_path, log=lambda m: None)


def test_the_job_keeps_the_callers_device_order(tmp_path):
    # ids the workflow read from nvidia-smi are PCI-bus indices; ids it read from the caller's
    # CUDA_VISIBLE_DEVICES are in the caller's order, which the job must keep
    found = gpu_slots.child_environment(["1"], {"PATH": "/bin"})
    assert found == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    given = gpu_slots.child_environment(["3"], {"CUDA_VISIBLE_DEVICES": "2,3"})
    assert given == {"CUDA_VISIBLE_DEVICES": "3"}


def test_lock_files_are_created_once_and_reopened(tmp_path):
    path = tmp_path / "0.lock"
    first = gpu_slots._try_lock(path)
    assert first is not None and path.is_file()
    assert gpu_slots._try_lock(path) is None  # held: a second open of the same file waits
    os.close(first)
    again = gpu_slots._try_lock(path)
    assert again is not None
    os.close(again)


# ---------------------------------------------------------------------------------------------
# In the workflow: the limit takes effect in Snakemake, the wrapper is in the commands

TOY = """\
configfile: "{repo}/config/config.yaml"


include: "{repo}/workflow/rules/common.smk"


rule all:
    input:
        expand("runs/job{{i}}", i=range(6)),


rule gpu_job:
    output:
        "runs/job{{i}}",
    resources:
        gpu=1,
    shell:
        gpu_job("python {stand_in} {{output}} {need} 0.2")
"""


def run_toy(tmp_path: Path, stand_in: Path, gpus, need: int) -> subprocess.CompletedProcess:
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(TOY.format(repo=REPO, stand_in=stand_in, need=need))
    (tmp_path / "runs").mkdir()
    cmd = [
        *SNAKEMAKE, "--snakefile", str(snakefile), "--directory", str(tmp_path), "--cores", "6",
        "-p", "--config", f"gpus={json.dumps(gpus)}",
    ]  # fmt: skip
    env = env_for_jobs(FLEXSEG_GPU_LOCK_DIR=str(tmp_path / "locks"))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def toy_records(tmp_path: Path) -> list[dict]:
    return [json.loads((tmp_path / "runs" / f"job{i}").read_text()) for i in range(6)]


def test_snakemake_runs_at_most_one_job_per_simulated_gpu(tmp_path, stand_in):
    proc = run_toy(tmp_path, stand_in, [0, 1, 2], need=3)
    out = proc.stdout + proc.stderr
    assert re.search(r"Provided resources: .*gpu=Resource\(\"gpu\", 3\)", out), out[-2000:]
    assert out.count("Shell command: python -m flexseg.gpu_slots run --count 1 -- python") == 6
    # Snakemake itself held the fourth job back: no wrapper ever had to wait for a free GPU.
    assert out.count("gpu_slots: CUDA_VISIBLE_DEVICES=") == 6 and "waiting" not in out
    records = toy_records(tmp_path)
    assert {r["ids"] for r in records} <= {"0", "1", "2"}
    assert max_overlap([(r["start"], r["end"]) for r in records]) == 3  # --cores 6 allows 6
    assert_no_shared_id(records)


def test_snakemake_without_gpus_runs_the_plain_commands(tmp_path, stand_in):
    proc = run_toy(tmp_path, stand_in, 0, need=6)  # all six must run at once to get past
    out = proc.stdout + proc.stderr
    assert "gpu_slots" not in out and 'Resource("gpu"' not in out
    records = toy_records(tmp_path)
    assert all(r["ids"] is None and r["saw"] == 6 for r in records), records


# The GPU stages of the paper's pipeline (every rule asking for `resources: gpu` is checked);
# the demo generator has no device code: it runs on the CPU and holds no GPU.
GPU_STAGES = {"generate_shard", "train", "evaluate", "quality_score"}
CPU_STAGES = {"demo_generator_prior", "demo_generator_source", "demo_generator_controlnet"}


def shell_commands(output: str) -> list[tuple[str, int, str]]:
    """(rule, GPUs asked for, shell command) of every job a dry run printed."""
    out, rule, gpus = [], None, 0
    for line in output.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):", line):
            rule, gpus = m.group(1), 0
        elif m := re.match(r"^\s+resources: .*\bgpu=(\d+)", line):
            gpus = int(m.group(1))
        elif line.startswith("Shell command: ") and line != "Shell command: None":  # rule all
            out.append((rule, gpus, line.removeprefix("Shell command: ")))
    return out


def write_overlay(tmp_path: Path, content: dict) -> Path:
    path = tmp_path / "gpus.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def test_the_demo_dag_wraps_exactly_the_gpu_jobs(tmp_path):
    overlay = write_overlay(tmp_path, {"gpus": [0, 1, 2], "training": {"nproc": 2}})
    proc = snakemake("-n", "-p", "--cores", "8", "all", "--configfile", str(overlay), cwd=tmp_path)
    commands = shell_commands(proc.stdout)
    assert {rule for rule, gpus, _ in commands if gpus} >= GPU_STAGES
    assert not {rule for rule, gpus, _ in commands if gpus} & CPU_STAGES
    assert CPU_STAGES <= {rule for rule, _, _ in commands}
    jobs = {rule: n for rule, n in job_counts(proc.stdout).items() if rule != "all"}
    assert len(commands) == sum(jobs.values())  # every job's command was seen
    for rule, gpus, command in commands:
        if gpus:
            assert gpus == (2 if rule == "train" else 1)  # a DDP run claims training.nproc
            assert command.startswith(
                f"python -m flexseg.gpu_slots run --count {gpus} -- python -m "
            ), command
        else:
            assert "gpu_slots" not in command, command

    plain = write_overlay(tmp_path, {"gpus": 0})
    proc = snakemake("-n", "-p", "--cores", "8", "all", "--configfile", str(plain), cwd=tmp_path)
    for rule, _, command in shell_commands(proc.stdout):
        assert command.startswith("python -m ") and "gpu_slots" not in command, (rule, command)


def test_auto_finds_the_gpus_nvidia_smi_lists(tmp_path):
    tools = tmp_path / "bin"
    tools.mkdir()
    smi = tools / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\ncat <<'EOF'\n{SMI}EOF\n")
    smi.chmod(0o755)
    overlay = write_overlay(tmp_path, {"training": {"nproc": 2}})
    cmd = [
        *SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n",
        "--cores", "8", "results/train/flexseg/tiny/seed0/model.pt", "--configfile", str(overlay),
    ]  # fmt: skip
    env = env_for_jobs(PATH=f"{tools}:/usr/bin:/bin")
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    # nvidia-smi lists 4 usable GPUs, two of them MIG instances of GPU 1: a 2-process training
    # fits on the whole GPUs 0 and 2 ...
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "gpu_slots run --count 2 -- python -m flexseg.train" in proc.stdout
    # ... a 4-process one does not (MIG instances do not count for DDP), and the error says why
    overlay.write_text(yaml.safe_dump({"training": {"nproc": 4}}))
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "training.nproc is 4" in proc.stdout + proc.stderr
    assert "MIG instances do not count" in proc.stdout + proc.stderr
    # With CUDA_VISIBLE_DEVICES naming 1 GPU, 2 processes do not fit either.
    overlay.write_text(yaml.safe_dump({"training": {"nproc": 2}}))
    env["CUDA_VISIBLE_DEVICES"] = "2"
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "training.nproc is 2" in proc.stdout + proc.stderr
    assert "GPUs 2" in proc.stdout + proc.stderr


def test_the_slurm_profile_hands_out_no_gpus_of_the_submitting_machine(tmp_path):
    fake_real_tree(tmp_path)
    cmd = [
        *SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(tmp_path), "-n",
        "all", "--profile", str(REPO / "workflow/profiles/slurm"),
        "--configfile", str(REPO / "config/paper/gta_to_five.yaml"),
    ]  # fmt: skip
    env = env_for_jobs(CUDA_VISIBLE_DEVICES="0,1")  # a login node with GPUs
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert job_counts(proc.stdout)["train"] == 36 + 12  # as test_workflow plans it
    assert "gpu_slots" not in proc.stdout + proc.stderr
