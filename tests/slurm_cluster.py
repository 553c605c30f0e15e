"""A single-node SLURM cluster in a temporary folder, for tests that submit real jobs.

Debian's packages (`apt-get install slurm-wlm slurmdbd munge mariadb-server`) provide the daemons;
every file they read or write (keys, sockets, configs, state, logs, the accounting database) lives
under the given folder and every port is a free one, so nothing of the machine's own setup is read
or changed. The daemons run in the foreground (`-D`, `-F`) as children of the test process and are
stopped by their pids.

Job accounting is real (slurmctld -> slurmdbd -> MariaDB) because snakemake-executor-plugin-slurm
polls job states with `sacct` wherever `sacct` is installed; without slurmdbd `sacct` answers
"Slurm accounting storage is disabled".

The node declares one GPU whose device file is /dev/null, so `--gpus=1` is accepted and SLURM sets
CUDA_VISIBLE_DEVICES for the job as it does on a GPU node; nothing runs on a GPU.

`bin/srun` stands in for a compute node's own /etc/slurm/slurm.conf: the plugin's job step
(snakemake-executor-plugin-slurm-jobstep 0.6) calls `srun` with every SLURM_* variable except the
job's ids removed, SLURM_CONF included, so a node that finds its config only through SLURM_CONF
fails with "srun: fatal: Could not establish a configuration source". The stand-in sets SLURM_CONF
and runs the real srun.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")
COMMANDS = (
    "mungekey", "munge", "mariadb-install-db", "mariadb", "sacctmgr", "sbatch", "srun", "sacct",
    "squeue", "scontrol", "sinfo", "scancel",
)  # fmt: skip
PACKAGES = "slurm-wlm slurmdbd munge mariadb-server"
CLUSTER = "flexseg"
ACCOUNT = "flexseg_test"
CPUS = 2
MEMORY_MB = 4000


class SlurmUnavailable(RuntimeError):
    """SLURM cannot run here; the message says why (a missing command or a daemon's log line)."""


def missing_prerequisites() -> str | None:
    """Why a local cluster cannot start here, or None."""
    missing = [name for name in (*DAEMONS, *COMMANDS) if shutil.which(name) is None]
    if missing:
        return f"SLURM is not installed (no {', '.join(missing)}): apt-get install {PACKAGES}"
    if os.geteuid() != 0:
        return "slurmd launches jobs only when it runs as root"
    return None


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def last_lines(path: Path, count: int = 3) -> str:
    if not path.is_file():
        return f"(no {path.name})"
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return " | ".join(lines[-count:]) or f"({path.name} is empty)"


class LocalSlurm:
    """munged, MariaDB, slurmdbd, slurmctld and slurmd for one node in two partitions (the
    first the default, e.g. a CPU and a GPU partition); `env` points SLURM's commands at it."""

    def __init__(self, root: Path, partitions: tuple[str, str] = ("cpu", "gpu")) -> None:
        self.root = root
        self.partitions = partitions
        self.logs = root / "log"
        self.host = socket.gethostname().split(".")[0]
        self.user = getpass.getuser()
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = root / "etc" / "slurm.conf"
        self.munge_socket = root / "munge" / "munge.socket"
        self.db_socket = root / "db" / "mariadb.sock"
        self.ctld_port, self.slurmd_port, self.dbd_port, self.db_port = free_ports(4)
        self.bin = root / "bin"
        # SLURM's and the system's folders only: a job finds the project's Python through the
        # workflow (it puts the folder of the Python running Snakemake first on the jobs' PATH).
        tools = [str(Path(shutil.which(name)).parent) for name in (*DAEMONS, *COMMANDS)]
        path = dict.fromkeys([str(self.bin), *tools, "/usr/bin", "/bin"])
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))},
            "SLURM_CONF": str(self.conf),
            "PATH": os.pathsep.join(path),
        }

    # -- starting --------------------------------------------------------------------------
    def start(self) -> LocalSlurm:
        for name in ("etc", "log", "munge", "db", "state", "spool", "bin"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        (self.root / "munge").chmod(0o700)
        self.write_configs()
        self.start_munge()
        self.start_database()
        self.spawn("slurmdbd", ["slurmdbd", "-D"])
        self.wait("slurmdbd", ["sacctmgr", "-n", "list", "cluster"], self.logs / "slurmdbd.log")
        for entity in (
            ["cluster", CLUSTER],
            ["account", ACCOUNT, f"cluster={CLUSTER}"],
            ["user", self.user, f"account={ACCOUNT}", f"cluster={CLUSTER}"],
        ):
            self.run(["sacctmgr", "-i", "add", *entity])
        self.spawn("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self.wait("slurmctld", ["scontrol", "ping"], self.logs / "slurmctld.log", expect="UP")
        self.spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf)])
        node_state = ["sinfo", "-h", "-N", "-o", "%T"]
        self.wait("slurmd", node_state, self.logs / "slurmd.log", expect="idle")
        return self

    def write_configs(self) -> None:
        r = self.root
        self.conf.write_text(
            f"""ClusterName={CLUSTER}
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser={self.user}
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={self.logs}/slurmctld.log
SlurmdLogFile={self.logs}/slurmd.log
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.dbd_port}
AccountingStoragePass={self.munge_socket}
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
GresTypes=gpu
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory={MEMORY_MB} Gres=gpu:1 State=UNKNOWN
PartitionName={self.partitions[0]} Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
PartitionName={self.partitions[1]} Nodes={self.host} MaxTime=INFINITE State=UP
"""
        )
        (self.conf.parent / "gres.conf").write_text(
            f"NodeName={self.host} Name=gpu File=/dev/null\n"
        )
        # slurmdbd reads slurmdbd.conf beside SLURM_CONF and refuses one others can read.
        dbd_conf = self.conf.parent / "slurmdbd.conf"
        dbd_conf.write_text(
            f"""AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.dbd_port}
SlurmUser={self.user}
LogFile={self.logs}/slurmdbd.log
PidFile={r}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.db_port}
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
"""
        )
        dbd_conf.chmod(0o600)
        srun = self.bin / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {shutil.which("srun")} "$@"\n')
        srun.chmod(0o755)

    def start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        self.run(["mungekey", "--create", f"--keyfile={key}"])
        self.spawn(
            "munged",
            [
                "munged", "--foreground", "--force", f"--socket={self.munge_socket}",
                f"--key-file={key}", f"--log-file={self.logs}/munged.log",
                f"--pid-file={self.root}/munge/munged.pid", f"--seed-file={self.root}/munge/seed",
            ],
        )  # fmt: skip
        self.wait("munged", ["munge", "-n", "-S", str(self.munge_socket)], self.logs / "munged.out")

    def start_database(self) -> None:
        data = self.root / "db" / "data"
        self.run(
            [
                "mariadb-install-db", "--no-defaults", f"--datadir={data}", f"--user={self.user}",
                "--auth-root-authentication-method=socket", "--skip-test-db",
            ]
        )  # fmt: skip
        self.spawn(
            "mariadbd",
            [
                "mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={self.db_socket}",
                f"--pid-file={self.root}/db/mariadb.pid", f"--port={self.db_port}",
                "--bind-address=127.0.0.1", f"--user={self.user}", "--skip-name-resolve",
                f"--log-error={self.logs}/mariadbd.log", "--innodb-buffer-pool-size=32M",
            ],
        )  # fmt: skip
        sql = ["mariadb", "--no-defaults", "-S", str(self.db_socket), "-u", "root", "-e"]
        self.wait("mariadbd", [*sql, "SELECT 1"], self.logs / "mariadbd.log")
        self.run(
            [
                *sql,
                "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm'; "
                "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';",
            ]
        )

    def spawn(self, name: str, argv: list[str]) -> None:
        with open(self.logs / f"{name}.out", "wb") as out:
            self.procs[name] = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def wait(
        self, name: str, probe: list[str], log: Path, expect: str = "", timeout: float = 60
    ) -> None:
        """Until `probe` succeeds (and prints `expect`); a daemon that exits or never gets
        there raises SlurmUnavailable with the last lines of its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise SlurmUnavailable(f"{name} exited: {self.tail(name, log)}")
            proc = subprocess.run(probe, env=self.env, capture_output=True, text=True)
            if proc.returncode == 0 and expect in proc.stdout:
                return
            time.sleep(0.5)
        raise SlurmUnavailable(f"{name} not ready after {timeout:.0f} s: {self.tail(name, log)}")

    def tail(self, name: str, log: Path) -> str:
        """The daemon's log, or its stderr where it stopped before opening the log."""
        if log.is_file() and log.stat().st_size:
            return last_lines(log)
        return last_lines(self.logs / f"{name}.out")

    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise SlurmUnavailable(f"{' '.join(argv[:3])} failed: {proc.stderr.strip()}")
        return proc

    # -- using ------------------------------------------------------------------------------
    def sacct(self, job_name: str, fields: list[str]) -> list[dict[str, str]]:
        """One dict per job of that name (`--name`, as the plugin's status query), no steps;
        a field that may hold "|" goes last."""
        proc = self.run(
            [
                "sacct", "-X", "--parsable2", "--noheader", "--name", job_name,
                "--starttime", "now-1days", "--endtime", "now",
                f"--format={','.join(fields)}",
            ]
        )  # fmt: skip
        split = len(fields) - 1  # only the last field may hold a "|" (SubmitLine does)
        return [
            dict(zip(fields, line.split("|", split), strict=True))
            for line in proc.stdout.splitlines()
            if line
        ]

    def daemon_logs(self) -> str:
        return "\n".join(
            f"{name}: {last_lines(self.logs / f'{name}.log', 5)}" for name in self.procs
        )

    # -- stopping ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel what is still queued or running, then stop the daemons newest first, each by
        its pid (SIGTERM, SIGKILL after 30 s)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run(["scancel", "--user", self.user], check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                queue = self.run(["squeue", "-h", "-o", "%i"], check=False)
                if queue.returncode != 0 or not queue.stdout.strip():
                    break
                time.sleep(1)
        for name in reversed(list(self.procs)):
            proc = self.procs.pop(name)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.root / "db", ignore_errors=True)  # the database files: ~100 MB
