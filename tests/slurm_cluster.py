"""A real single-node SLURM for tests: Debian's slurmctld, slurmd and slurmdbd (accounting in a
private MariaDB, so sacct works), munge, partitions `cpu` and `gpu`, and two GPUs declared as GRES.

Everything lives in one state folder: configs, spool, logs, the database, the munge key and socket,
and the GPUs' device files (`mknod c 1 3`, /dev/null's numbers: Slurm 22.05 drops a GPU GRES without
`File=`, and there is no CUDA behind them). The daemons run in the foreground as children of the
test on free ports; `stop()` cancels every job, stops exactly those daemons, kills whatever process
still carries this cluster's SLURM_CONF (a job's leftovers) and deletes the folder. No systemd, no
file outside the folder is touched (apt aside: `ensure_installed` installs the packages once, with
service starts blocked by a temporary policy-rc.d when the machine has none).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "slurmdbd", "mariadb-server", "munge"]
BINARIES = ["unshare", "slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct", "sacctmgr", "mariadbd", "mariadb-install-db",
            "munged", "mungekey"]
ACCOUNT = "layerbound"
NODE_MEM_MB = 8000      # declared for the node (less where the machine has less)
GPUS = 2


def _missing() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def ensure_installed() -> None:
    """Install Debian's Slurm, MariaDB and munge if missing; skip (saying why) where that is impossible."""
    if not _missing():
        return
    if os.geteuid() != 0:
        pytest.skip(f"a real Slurm needs root to install and run it (missing: {', '.join(_missing())})")
    if shutil.which("apt-get") is None:
        pytest.skip(f"no apt-get to install {', '.join(PACKAGES)}")
    policy = Path("/usr/sbin/policy-rc.d")
    own_policy = not policy.exists()
    if own_policy:   # Debian's way to keep postinst scripts from starting the services
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]):
            result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
            if result.returncode != 0:
                pytest.skip(f"`{' '.join(command)}` failed: {(result.stderr or result.stdout).strip()[-500:]}")
    finally:
        if own_policy:
            policy.unlink()
    if _missing():
        pytest.skip(f"still missing after apt-get install: {', '.join(_missing())}")


def ensure_mount_namespace() -> None:
    """The cluster shows its slurm.conf to its jobs at /etc/slurm in a mount namespace of their own
    (LocalSlurm.start); skip where this machine allows none (a container without CAP_SYS_ADMIN)."""
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"no mount namespace for the test cluster's slurmd (unshare --mount: {result.stderr.strip()})")


def _epoch(timestamp: str) -> float | None:
    """sacct's local time stamp (2026-12-07T03:48:42) in seconds since the epoch; None: Unknown/None."""
    try:
        return time.mktime(time.strptime(timestamp, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _wait(what: str, ready, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.3)
    tail = log.read_text()[-2000:] if log is not None and log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s\n{tail}")


class LocalSlurm:
    def __init__(self, base: Path, account: str = ACCOUNT):
        self.base = base
        self.account = account
        self.host = socket.gethostname().split(".")[0]
        self.conf = base / "etc" / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "MYSQL_UNIX_PORT": str(base / "db" / "mysql.sock")}
        self.daemons: list[tuple[str, subprocess.Popen]] = []

    # --- commands ---
    def run(self, *command: str, check: bool = True, timeout: float = 60) -> str:
        result = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
        return result.stdout

    def _ok(self, *command: str) -> bool:
        return subprocess.run(command, capture_output=True, env=self.env).returncode == 0

    def _spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.base / "log" / f"{name}.out", "w")
        proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.daemons.append((name, proc))
        return proc

    # --- lifecycle ---
    def start(self) -> "LocalSlurm":
        b = self.base
        for d in ("etc", "log", "spool/ctld", "spool/d", "munge", "db", "dev"):
            (b / d).mkdir(parents=True, exist_ok=True)
        os.chmod(b / "munge", 0o700)
        ctld_port, d_port, dbd_port = _free_ports(3)
        self._munge()
        self._mariadb()
        self._write_configs(ctld_port, d_port, dbd_port)
        self._spawn("slurmdbd", ["slurmdbd", "-D"])
        _wait("slurmdbd", lambda: self._ok("sacctmgr", "-n", "show", "cluster"), 60, b / "log" / "slurmdbd.out")
        self.run("sacctmgr", "-i", "add", "cluster", "lbtest")
        self.run("sacctmgr", "-i", "add", "account", self.account, "cluster=lbtest")
        self.run("sacctmgr", "-i", "add", "user", getpass.getuser(), f"account={self.account}",
                 "cluster=lbtest")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        _wait("slurmctld", lambda: self._ok("scontrol", "ping"), 60, b / "log" / "slurmctld.out")
        # Inside a job the plugin's srun runs without SLURM_CONF (the jobstep plugin strips SLURM_*
        # variables), so srun reads the default /etc/slurm/slurm.conf: slurmd and its jobs get this
        # cluster's etc/ there, in a mount namespace of their own (nothing changes outside it).
        self._spawn("slurmd", ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                               'mount --bind "$1" /etc/slurm && exec slurmd -D -N "$2"', "sh",
                               str(b / "etc"), self.host])
        _wait("slurmd", lambda: "idle" in self.run("sinfo", "-h", "-o", "%t", check=False), 60,
              b / "log" / "slurmd.out")
        return self

    def _munge(self) -> None:
        m = self.base / "munge"
        subprocess.run(["mungekey", "--create", f"--keyfile={m / 'munge.key'}"], check=True, capture_output=True)
        self._spawn("munged", ["munged", "-F", "--force", f"--socket={m / 'munge.socket'}",
                               f"--key-file={m / 'munge.key'}", f"--pid-file={m / 'munged.pid'}",
                               f"--seed-file={m / 'munged.seed'}", f"--log-file={m / 'munged.log'}"])
        _wait("munged", (m / "munge.socket").exists, 30, m / "munged.log")

    def _mariadb(self) -> None:
        db = self.base / "db"
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={db / 'data'}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=300)
        self._spawn("mariadbd", ["mariadbd", "--no-defaults", f"--datadir={db / 'data'}", "--user=root",
                                 f"--socket={db / 'mysql.sock'}", "--skip-networking", f"--pid-file={db / 'mariadbd.pid'}",
                                 "--innodb-buffer-pool-size=32M", f"--log-error={db / 'error.log'}"])
        _wait("mariadbd", (db / "mysql.sock").exists, 60, db / "error.log")

    def _write_configs(self, ctld_port: int, d_port: int, dbd_port: int) -> None:
        b, munge_socket = self.base, self.base / "munge" / "munge.socket"
        # The node as slurmd sees it (CPUs, sockets, cores, threads), with less memory declared.
        topology = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.split()
        hardware = " ".join(w for w in topology if w.split("=")[0] in
                            ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore"))
        real = next(int(w.split("=")[1]) for w in topology if w.startswith("RealMemory="))
        self.node_mem_mb = min(NODE_MEM_MB, real)
        for i in range(GPUS):
            device = b / "dev" / f"gpu{i}"
            if not device.exists():
                os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))
        (b / "etc" / "gres.conf").write_text(f"NodeName={self.host} Name=gpu File={b / 'dev'}/gpu[0-{GPUS - 1}]\n")
        self.conf.write_text(f"""\
ClusterName=lbtest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={b}/spool/ctld
SlurmdSpoolDir={b}/spool/d
SlurmctldPidFile={b}/slurmctld.pid
SlurmdPidFile={b}/slurmd.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
AccountingStoragePass={munge_socket}
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
KillWait=5
NodeName={self.host} NodeAddr=127.0.0.1 {hardware} RealMemory={self.node_mem_mb} Gres=gpu:{GPUS} State=UNKNOWN
PartitionName=cpu Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes={self.host} MaxTime=INFINITE State=UP
""")
        dbd = b / "etc" / "slurmdbd.conf"
        dbd.write_text(f"""\
AuthType=auth/munge
AuthInfo=socket={munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
LogFile={b}/log/slurmdbd.log
PidFile={b}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
""")
        dbd.chmod(0o600)

    def stop(self) -> list[str]:
        """Cancel every job, stop the daemons this object started, delete the folder; returns what
        had to be killed besides the daemons (stray job processes)."""
        if any(name == "slurmctld" and proc.poll() is None for name, proc in self.daemons):
            self.run("scancel", "--user", getpass.getuser(), check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.run("squeue", "-h", "-o", "%i", check=False).strip():
                time.sleep(0.5)
        for name, proc in reversed(self.daemons):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        strays = self.stray_processes()
        for pid, command in strays:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.daemons.clear()
        shutil.rmtree(self.base, ignore_errors=True)
        return [" ".join(argv) for _, argv in strays]

    def stray_processes(self, marker: str | None = None) -> list[tuple[int, list[str]]]:
        """(pid, argv) of the processes other than this one whose environment holds `marker`
        (default: this cluster's SLURM_CONF: its jobs and job steps, and Snakemake runs of the tests)."""
        marker = (marker or f"SLURM_CONF={self.conf}").encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    argv = (entry / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
                    found.append((int(entry.name), [a.decode(errors="replace") for a in argv]))
            except OSError:
                continue
        return found

    # --- what the tests look at ---
    def jobs(self) -> list[dict]:
        """Every job this cluster ran, from accounting: id, state, partition, GPUs asked, comment,
        and submit / start / end times (seconds since the epoch) and elapsed seconds."""
        fields = "JobID,State,Partition,ReqTRES,ExitCode,Submit,Start,End,ElapsedRaw,Comment%300"
        out = self.run("sacct", "-X", "-n", "-P", "--allusers", "--starttime", "now-1days", f"--format={fields}")
        rows = []
        for line in out.splitlines():
            job, state, partition, tres, exit_code, submit, start, end, elapsed, comment = line.split("|", 9)
            gpus = next((int(t.split("=")[1]) for t in tres.split(",") if t.startswith("gres/gpu=")), 0)
            rows.append({"id": job, "state": state, "partition": partition, "gpus": gpus, "comment": comment,
                         "exit": exit_code, "submit": _epoch(submit), "start": _epoch(start), "end": _epoch(end),
                         "elapsed": int(elapsed or 0)})
        return rows

    def queue(self) -> list[dict]:
        """Jobs slurmctld holds now (pending, running, or finished less than MinJobAge ago)."""
        out = self.run("squeue", "-h", "--states=all", "--format=%i|%T|%k", check=False)
        return [dict(zip(("id", "state", "comment"), line.split("|", 2))) for line in out.splitlines() if line]

    def job_processes(self, job_id: str) -> list[tuple[int, list[str]]]:
        """(pid, argv) of the processes running a job (SLURM_JOB_ID in their environment)."""
        return self.stray_processes(f"SLURM_JOB_ID={job_id}")
