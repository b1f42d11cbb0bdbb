"""A real PostgreSQL for the tests: the system's binaries, a throwaway cluster on a loopback port.

`PostgresCluster.start()` finds the binaries (`/usr/lib/postgresql/<version>/bin`, the newest
version), installing Debian's `postgresql` package first when there are none (as root, with no input
and no cluster of the package's own started; a file lock keeps parallel test processes from
installing twice). It runs `initdb` and `postgres` as a user that is not
root (PostgreSQL refuses root: `nobody` when the tests run as root) with the data in a new temporary
folder that user owns, listening on 127.0.0.1 only, on a port picked free, no Unix socket. Each test
gets a database of its own (`new_database`), made from `template0`. `stop()` stops the cluster at once
and removes its folder.

Settings trade durability for speed: no fsync, no full-page writes, no waiting for the WAL flush at
commit. Only the taskwire servers are killed in tests, never PostgreSQL, so a committed transaction
is never lost all the same. `start(durable=True)` keeps PostgreSQL's durable defaults (benchmarks).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_INSTALL_LOCK = Path(tempfile.gettempdir()) / "taskwire-postgresql-install.lock"
_CREATECLUSTER_CONF = Path("/etc/postgresql-common/createcluster.conf")
_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
}
_DURABLE = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on"}


def _bin_dirs() -> list[Path]:
    found = [path for path in Path("/usr/lib/postgresql").glob("*/bin") if (path / "postgres").exists()]
    return sorted(found, key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0, reverse=True)


def find_binaries() -> Path:
    """The bin folder of the newest PostgreSQL installed, installing Debian's package when there is none."""
    if dirs := _bin_dirs():
        return dirs[0]
    with open(_INSTALL_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process may be installing it right now
        if not _bin_dirs():
            if os.geteuid() != 0:
                raise RuntimeError(
                    "PostgreSQL is not installed, and installing it needs root: apt-get install postgresql"
                )
            _install()
    if dirs := _bin_dirs():
        return dirs[0]
    raise RuntimeError("installing the postgresql package left no /usr/lib/postgresql/*/bin")


def _apt_get(*args: str) -> None:
    """apt-get with no question asked: no debconf dialog, a changed configuration file kept, a dpkg lock held by
    another apt (a machine's first minutes) waited for; its output in the error when it fails."""
    options = ["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"]
    options += ["-o", "DPkg::Lock::Timeout=300"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "UCF_FORCE_CONFFOLD": "1"}
    done = subprocess.run(
        ["apt-get", *options, *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"apt-get {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-4000:]}")


def without_main_cluster(conf: str) -> str:
    """postgresql-common's createcluster.conf, set not to create (and start) a cluster `main` on port 5432 when a
    server package is installed: the tests start clusters of their own."""
    lines = [line for line in conf.splitlines() if not line.lstrip("#").strip().startswith("create_main_cluster")]
    return "\n".join([*lines, "create_main_cluster = false"]) + "\n"


def _install() -> None:
    """Debian's `postgresql`: postgresql-common first, told to create no cluster of its own, then the server."""
    _apt_get("update", "-q")
    _apt_get("install", "-y", "-q", "--no-install-recommends", "postgresql-common")
    if _CREATECLUSTER_CONF.exists():
        _CREATECLUSTER_CONF.write_text(without_main_cluster(_CREATECLUSTER_CONF.read_text()))
    _apt_get("install", "-y", "-q", "--no-install-recommends", "postgresql")


def _die_with_parent() -> None:
    """In the child before it runs postgres: an immediate shutdown (SIGQUIT) if the test process is killed."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT)


def _remove_abandoned(older_than_s: float = 600.0) -> None:
    """Remove the clusters of test runs that were killed before they could (no postmaster runs in them), once
    they are old enough that no other run is still setting them up."""
    for root in Path(tempfile.gettempdir()).glob("taskwire-pg-*"):
        try:
            if time.time() - root.stat().st_mtime < older_than_s:
                continue
            pid_file = root / "data" / "postmaster.pid"
            if pid_file.exists() and Path(f"/proc/{pid_file.read_text().split()[0]}").exists():
                continue
        except (OSError, IndexError):
            continue
        shutil.rmtree(root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as() -> str | None:
    """The user PostgreSQL runs as: this one, or `nobody` when this one is root (which PostgreSQL refuses)."""
    return pwd.getpwnam("nobody").pw_name if os.geteuid() == 0 else None


@dataclass
class PostgresCluster:
    bin_dir: Path
    root: Path
    port: int = 0
    user: str = "taskwire"
    process: subprocess.Popen[bytes] | None = None
    _names: Iterator[int] = field(default_factory=itertools.count)

    durable: bool = False  # fsync and synchronous commits on, as PostgreSQL ships (the benchmarks)

    @classmethod
    def start(cls, *, durable: bool = False) -> PostgresCluster:
        """`durable`: PostgreSQL's own durable defaults instead of the fast test settings."""
        _remove_abandoned()
        root = Path(tempfile.mkdtemp(prefix="taskwire-pg-"))
        cluster = cls(find_binaries(), root, durable=durable)
        try:
            cluster._init()
            cluster._serve()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def _group(self) -> int | None:
        user = _run_as()
        return None if user is None else pwd.getpwnam(user).pw_gid

    def _init(self) -> None:
        user = _run_as()
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            cwd=self.root,
            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
            user=_run_as(),
            group=self._group,
        )

    def restart(self) -> None:
        """A database restart: a fast shutdown (every session is ended), then the same data served again on the
        same port."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=30)
        self._serve(port=self.port)

    def _serve(self, *, port: int = 0) -> None:
        for _ in range(1 if port else 5):  # a picked port may be taken by the time postgres binds it
            self.port = port or _free_port()
            settings = {**_SETTINGS, **(_DURABLE if self.durable else {}), "port": str(self.port)}
            options = [f"-c{name}={value}" for name, value in settings.items()]
            log = open(self.root / "postgres.log", "ab")  # noqa: SIM115 (the process keeps it)
            self.process = subprocess.Popen(
                [str(self.bin_dir / "postgres"), "-D", str(self.data), *options],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.root,
                env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
                start_new_session=True,  # a Ctrl-C reaches the tests, which stop it in order
                preexec_fn=_die_with_parent,
                user=_run_as(),
                group=self._group,
            )
            log.close()
            if self._ready():
                return
            self.process.kill()
            self.process.wait()
        raise RuntimeError(f"PostgreSQL did not start: {(self.root / 'postgres.log').read_text()[-2000:]}")

    def _ready(self, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            check = subprocess.run(
                [str(self.bin_dir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-q"],
                check=False,
            )
            if check.returncode == 0 and self._says_ready():
                return True
            time.sleep(0.05)
        return False

    def _says_ready(self) -> bool:
        """Whether this cluster's postmaster wrote that it accepts connections (its `postmaster.pid`, as pg_ctl reads
        it): pg_isready alone is answered by any cluster on the port, one that took it first too."""
        assert self.process is not None
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[0].strip() == str(self.process.pid) and lines[7].strip() == "ready"

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.url(database),
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    def new_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.psql(f"CREATE DATABASE {name} TEMPLATE template0 STRATEGY FILE_COPY")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with contextlib.suppress(subprocess.CalledProcessError):
            self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def backend_pids(self) -> list[int]:
        """The postgres processes of this cluster (the postmaster and its children)."""
        assert self.process is not None
        pids = [self.process.pid]
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with contextlib.suppress(OSError):
            pids += [int(pid) for pid in children.read_text().split()]
        return pids

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown: ends the sessions still open
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)
