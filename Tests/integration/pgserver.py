"""A throwaway PostgreSQL 15 server for a test session (initdb into a temp directory).

It listens on 127.0.0.1 only, on a free port, with its unix socket in its own directory;
TCP connections authenticate with scram-sha-256 (role `relay`, a random password, database
`relay`), the superuser `postgres` connects over the unix socket only (trust) and is what
creates databases. Every process it starts is stopped (also on failure), every wait bounded.

Run as root, initdb and postgres run as the `postgres` system user (`runuser -u postgres --`),
since PostgreSQL refuses to run as root.

    python3 Tests/integration/pgserver.py   # self-check: start, connect, restart, stop
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Callable, Optional

PG_BIN = Path(os.environ.get("RELAY_PG_BIN", "/usr/lib/postgresql/15/bin"))
SETUP_HINT = "install it with `bash scripts/setup.sh --test` (Debian's postgresql, version 15)"


class PgError(RuntimeError):
    pass


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def missing() -> Optional[str]:
    """Why the server cannot run here (None: it can)."""
    for tool in ("initdb", "postgres", "pg_ctl"):
        if not (PG_BIN / tool).exists():
            return f"PostgreSQL 15 is not installed ({PG_BIN / tool} is missing): {SETUP_HINT}"
    if not shutil.which("psql"):
        return f"psql is not installed: {SETUP_HINT}"
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "running as root needs runuser (util-linux) to start PostgreSQL as the postgres user"
    if os.geteuid() == 0:
        try:
            import pwd
            pwd.getpwnam("postgres")
        except KeyError:
            return f"no `postgres` system user to run PostgreSQL as (root is refused): {SETUP_HINT}"
    return None


class PgServer:
    """One PostgreSQL cluster. `start()`, `stop()`, `restart()`; `url` for role relay."""

    def __init__(self, port: Optional[int] = None, port_picker: Optional[Callable[[], int]] = None,
                 base: Optional[Path] = None, password: Optional[str] = None):
        why = missing()
        if why:
            raise PgError(why)
        self.host = "127.0.0.1"
        self.port = port or (port_picker or _free_port)()
        self._own_base = base is None
        self.base = Path(base) if base else Path(tempfile.mkdtemp(prefix="relay-pg-"))
        self.datadir = self.base / "pgdata"
        self.sockdir = self.base / "sock"
        self.logfile = self.base / "postgres.log"
        self.user = "relay"
        self.password = password or secrets.token_hex(16)
        self.dbname = "relay"
        self.proc: Optional[subprocess.Popen] = None
        self._log = None
        self._initialized = False
        self._dbs = 0

    # ------------------------------------------------------------ addresses

    def url_for(self, dbname: str, password: Optional[str] = "", user: Optional[str] = None, query: str = "") -> str:
        """postgres://user:password@127.0.0.1:port/dbname; password None: no password in the URL."""
        pw = self.password if password == "" else password
        u = urllib.parse.quote(user or self.user, safe="")
        auth = u if pw is None else f"{u}:{urllib.parse.quote(pw, safe='')}"
        return f"postgres://{auth}@{self.host}:{self.port}/{dbname}" + (f"?{query}" if query else "")

    @property
    def url(self) -> str:
        return self.url_for(self.dbname)

    @property
    def url_nopass(self) -> str:
        return self.url_for(self.dbname, password=None)

    # ------------------------------------------------------------ processes

    def _as_pg(self, argv: list) -> list:
        argv = [str(a) for a in argv]
        return ["runuser", "-u", "postgres", "--"] + argv if os.geteuid() == 0 else argv

    def _run(self, argv: list, timeout: float = 60.0, as_pg: bool = True, input: Optional[str] = None,
             env: Optional[dict] = None) -> subprocess.CompletedProcess:
        argv = self._as_pg(argv) if as_pg else [str(a) for a in argv]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                               stdin=None if input is not None else subprocess.DEVNULL, env=env)
        except subprocess.TimeoutExpired as e:
            raise PgError(f"{' '.join(argv)} did not finish within {timeout}s: {e}") from e
        if r.returncode != 0:
            raise PgError(f"{' '.join(argv)} exited with {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def _init(self):
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.sockdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            for p in (self.base, self.datadir, self.sockdir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            os.chmod(self.base, 0o755)
        os.chmod(self.datadir, 0o700)
        pwfile = self.base / "superuser.pw"  # initdb wants some password source for scram; unused
        pwfile.write_text(secrets.token_hex(16) + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._run([PG_BIN / "initdb", "-D", self.datadir, "-U", "postgres", "--auth-local=trust",
                   "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8",
                   "--no-sync"], timeout=120)
        pwfile.unlink()
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                    f"unix_socket_directories = '{self.sockdir}'\n"
                    "password_encryption = 'scram-sha-256'\nfsync = off\nsynchronous_commit = off\n"
                    "full_page_writes = off\nmax_connections = 200\nlog_min_messages = warning\n")
        # only the unix socket trusts (superuser); TCP always wants the password
        (self.datadir / "pg_hba.conf").write_text(
            "local all all trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")
        if os.geteuid() == 0:
            os.chown(self.datadir / "pg_hba.conf", pw.pw_uid, pw.pw_gid)
        self._initialized = True

    def start(self, timeout: float = 30.0) -> "PgServer":
        if self.proc is not None and self.proc.poll() is None:
            return self
        first = not self._initialized
        if first:
            self._init()
        if self._log is None:
            self._log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(self._as_pg([PG_BIN / "postgres", "-D", self.datadir]), stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready(timeout)
            if first:
                self.psql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{self.password}'")
                self.psql(f"CREATE DATABASE {self.dbname} OWNER {self.user}")
        except BaseException:
            self.stop()
            raise
        return self

    def _connect_tcp(self):
        """Opens and closes a TCP connection to the server; OSError when it cannot."""
        with socket.create_connection((self.host, self.port), timeout=1):
            pass

    def _wait_ready(self, timeout: float):
        end = time.monotonic() + timeout
        last = ""
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise PgError(f"postgres exited with {self.proc.returncode}\n{self.log_tail()}")
            r = subprocess.run([PG_BIN / "pg_isready", "-h", str(self.sockdir), "-p", str(self.port), "-t", "1"],
                               capture_output=True, text=True, timeout=10)
            if r.returncode == 0:
                # and over TCP too
                try:
                    self._connect_tcp()
                    return
                except OSError as e:
                    last = repr(e)
            else:
                last = r.stdout + r.stderr
            time.sleep(0.05)
        raise PgError(f"postgres not ready within {timeout}s ({last.strip()})\n{self.log_tail()}")

    def stop(self, mode: str = "fast", timeout: float = 20.0):
        """Stops the server (SIGINT: fast shutdown, then SIGQUIT, then SIGKILL of the group)."""
        p = self.proc
        if p is not None and p.poll() is None:
            sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
            # runuser forwards signals to postgres; signal the postmaster's group to be sure
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGQUIT)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(p.pid, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        p.wait(5)
        # backends left behind (SIGKILL of the postmaster) die with the group
        if p is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        self._wait_port_free(10)

    def _wait_port_free(self, timeout: float):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    pass
            except OSError:
                return
            time.sleep(0.05)

    def restart(self, timeout: float = 30.0) -> "PgServer":
        self.stop()
        return self.start(timeout)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self):
        """Stops the server and removes its directory."""
        try:
            self.stop()
        finally:
            if self._log is not None:
                with contextlib.suppress(Exception):
                    self._log.close()
            if self._own_base:
                shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ SQL

    def psql(self, sql: str, dbname: str = "postgres", timeout: float = 30.0) -> str:
        """Runs SQL as the superuser over the unix socket; returns the unaligned output."""
        r = self._run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", self.sockdir, "-p", self.port,
                       "-U", "postgres", "-d", dbname, "-c", sql], timeout=timeout, as_pg=False)
        return r.stdout

    def psql_as_relay(self, sql: str, dbname: Optional[str] = None, timeout: float = 30.0) -> str:
        """Runs SQL as role relay over TCP with its password (what the relay does)."""
        env = dict(os.environ, PGPASSWORD=self.password)
        r = self._run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-h", self.host, "-p", self.port,
                       "-U", self.user, "-d", dbname or self.dbname, "-c", sql], timeout=timeout, as_pg=False, env=env)
        return r.stdout

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database owned by relay; returns its name."""
        self._dbs += 1
        name = f"{prefix}_{os.getpid()}_{self._dbs}_{secrets.token_hex(3)}"
        self.psql(f"CREATE DATABASE {name} OWNER {self.user}")
        return name

    def drop_database(self, name: str):
        with contextlib.suppress(PgError):
            self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-n:]
        except OSError:
            return ""


if __name__ == "__main__":
    with PgServer() as pg:
        print("url", pg.url)
        print(pg.psql_as_relay("select current_user, version()").strip())
        db = pg.create_database()
        print("fresh", db, pg.psql_as_relay("select current_database()", dbname=db).strip())
        pg.stop()
        assert not pg.running()
        pg.start()
        print("after restart", pg.psql_as_relay("select 1").strip())
    print("stopped, removed:", not pg.base.exists())
