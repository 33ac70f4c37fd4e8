"""A real, throwaway PostgreSQL server on a free loopback port, for the run-storage test.

Not a fake: Debian's PostgreSQL binaries (`initdb`, `postgres`) with a data folder in a temporary
directory, started by the test and stopped after it. PostgreSQL refuses to run as root, so when
the tests run as root (CI) the server runs as the `postgres` user the Debian package creates.
`.ci/run` installs the package (`apt-get install postgresql`) when no `initdb` is found.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

USER = "beacon"
# A throwaway password for a server that lives as long as one test on 127.0.0.1.
PASSWORD = "beacon-test-only"
DATABASE = "dagster"


class PostgresMissingError(RuntimeError):
    pass


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str
    database: str

    def env(self) -> dict[str, str]:
        """The variables dagster.postgres.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": self.database,
        }


def server_binaries() -> str:
    """The folder holding `initdb` and `postgres`: PATH first, then Debian's versioned folders."""
    found = shutil.which("initdb")
    if found and os.path.exists(os.path.join(os.path.dirname(found), "postgres")):
        return os.path.dirname(found)
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    if versions:
        return os.path.dirname(versions[-1])
    raise PostgresMissingError(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH or in "
        "/usr/lib/postgresql/*/bin: install them (Debian/Ubuntu: `apt-get install postgresql`; "
        "`.ci/run` does this in CI)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_as() -> pwd.struct_passwd | None:
    """The account the server runs as when we are root (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresMissingError(
            "running as root and there is no `postgres` user to run the server as: install "
            "Debian's `postgresql` package (it creates the user), or run the tests as non-root"
        ) from None


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    """initdb into a temporary folder, start `postgres` on 127.0.0.1:PORT, create the database;
    stop the server and delete the folder afterwards."""
    binaries = server_binaries()
    account = _run_as()
    # Not under pytest's tmp_path: root's 0700 folders are closed to the `postgres` user.
    folder = tempfile.mkdtemp(prefix="beacon-postgres-")
    data = os.path.join(folder, "data")
    password_file = os.path.join(folder, "password")
    with open(password_file, "w") as handle:
        handle.write(PASSWORD)
    process: subprocess.Popen | None = None
    log = open(os.path.join(folder, "postgres.log"), "wb")  # noqa: SIM115 (closed in finally)
    try:
        if account:
            for path in (folder, password_file):
                os.chown(path, account.pw_uid, account.pw_gid)
        user = account.pw_name if account else None
        subprocess.run(
            [
                os.path.join(binaries, "initdb"),
                "--pgdata",
                data,
                "--username",
                USER,
                "--pwfile",
                password_file,
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            user=user,
            cwd=folder,
        )
        port = _free_port()
        process = subprocess.Popen(
            [
                os.path.join(binaries, "postgres"),
                "-D",
                data,
                "-p",
                str(port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={folder}",
                "-c",
                "fsync=off",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=user,
            cwd=folder,
            start_new_session=True,
        )
        server = Postgres("127.0.0.1", port, USER, PASSWORD, DATABASE)
        _wait_and_create_database(server, process, folder)
        yield server
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"initdb failed: {error.stderr.decode(errors='replace')}") from error
    finally:
        if process is not None and process.poll() is None:
            # SIGINT is PostgreSQL's "fast" shutdown: disconnect clients, stop.
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_and_create_database(server: Postgres, process: subprocess.Popen, folder: str) -> None:
    import psycopg2

    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            with open(os.path.join(folder, "postgres.log"), errors="replace") as handle:
                raise RuntimeError(f"postgres exited with {process.returncode}:\n{handle.read()}")
        try:
            connection = psycopg2.connect(
                host=server.host,
                port=server.port,
                user=server.user,
                password=server.password,
                dbname="postgres",
                connect_timeout=2,
            )
            break
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError("postgres did not accept connections within 60 s") from None
            time.sleep(0.2)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {server.database}")
    connection.close()
