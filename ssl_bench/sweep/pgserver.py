"""A throwaway PostgreSQL server for a study's storage, from the distribution's server binaries (Debian's package
`postgresql`): one cluster in a folder, listening on localhost only, trust authentication.

    python -m ssl_bench.sweep.pgserver start /tmp/ssl_bench_pg     # prints the storage URL
    python -m ssl_bench.sweep.pgserver stop /tmp/ssl_bench_pg      # stops it (the folder stays; delete it after)

For the tests and the multi-worker demo; a study that lives longer wants a real server with a password.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


def server_bin() -> Path | None:
    """The folder of initdb and pg_ctl (the newest installed version), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner() -> list[str]:
    # initdb and postgres refuse to run as root: run them as the `postgres` account the package creates.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass
class Server:
    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@localhost:{self.port}/postgres"

    def _pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        bindir = server_bin()
        assert bindir is not None
        return subprocess.run([*_as_owner(), str(bindir / "pg_ctl"), "-D", str(self.root / "data"), *args],
                              capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        opts = f"-c listen_addresses=localhost -p {self.port} -k {self.root / 'socket'} -c fsync=off"
        done = self._pg_ctl("-l", str(self.root / "server.log"), "-o", opts, "-w", "start")
        if done.returncode != 0:
            log = (self.root / "server.log").read_text()[-2000:] if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()} {log}")

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "stop")


def create(root: Path, port: int | None = None) -> Server:
    """initdb a cluster in ``root`` (created, owned by the server's account) and start it."""
    bindir = server_bin()
    if bindir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    root.mkdir(parents=True, exist_ok=True)
    (root / "socket").mkdir(exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(root / "socket", "postgres", "postgres")
    done = subprocess.run([*_as_owner(), str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres",
                           "--auth=trust", "--no-sync", "-E", "UTF8"], capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed: {done.stderr.strip()[-2000:]}")
    server = Server(root, port or free_port())
    (root / "port").write_text(str(server.port))
    server.start()
    return server


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print(__doc__)
        return 2
    root = Path(argv[1]).resolve()
    if argv[0] == "start":
        if (root / "data").exists():
            server = Server(root, int((root / "port").read_text()))
            server.start()
        else:
            server = create(root)
        print(server.url)
    else:
        Server(root, int((root / "port").read_text())).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
