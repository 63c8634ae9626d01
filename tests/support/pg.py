"""A throwaway PostgreSQL cluster for the ledger tests, and a fresh schema per test.

:func:`start_cluster` runs ``initdb`` and ``pg_ctl`` on a Unix socket in a temp
dir (no TCP port). PostgreSQL refuses to run as root, so as root the cluster
belongs to ``nobody`` (``runuser``). ``.ci/run`` starts its own cluster the
same way and exports ``PSABILL_TEST_PG_URL``; the fixture then uses that one.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import List, Optional
from urllib.parse import quote

CLUSTER_USER = "nobody"  # as root; otherwise the cluster belongs to whoever runs the tests
SUPERUSER = "psabill"


def find_binary(name: str) -> Optional[str]:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class Cluster:
    """A running throwaway cluster; :attr:`url` connects as its superuser over the socket."""

    def __init__(self, base: Path, pg_ctl: str, as_user: List[str]) -> None:
        self.base = base
        self.data = base / "data"
        self.socket_dir = base / "sock"
        self.pg_ctl = pg_ctl
        self.as_user = as_user
        self.url = f"postgresql://{SUPERUSER}@/postgres?host={quote(str(self.socket_dir), safe='/')}&port=5432"

    def stop(self) -> None:
        subprocess.run([*self.as_user, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.base, ignore_errors=True)


def start_cluster() -> Cluster:
    """initdb + pg_ctl start; raises RuntimeError with the reason when PostgreSQL cannot start."""
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("initdb/pg_ctl not found (install Debian's postgresql, or set PSABILL_TEST_PG_URL)")
    as_user: List[str] = []
    base = Path(tempfile.mkdtemp(prefix="psabill-pg-"))
    if os.geteuid() == 0:
        if not shutil.which("runuser"):
            raise RuntimeError("running as root and runuser is missing: cannot start PostgreSQL as non-root")
        as_user = ["runuser", "-u", CLUSTER_USER, "--"]
        os.chmod(base, 0o755)
        shutil.chown(base, CLUSTER_USER)
    cluster = Cluster(base, pg_ctl, as_user)

    def run(*args: str) -> None:
        proc = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120, cwd=str(base))
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-800:]}")

    try:
        run("mkdir", "-m", "0755", str(cluster.socket_dir))
        run(initdb, "-D", str(cluster.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-sync",
            "--no-instructions")
        options = (f"-k {cluster.socket_dir} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=100")
        run(pg_ctl, "-D", str(cluster.data), "-o", options, "-l", str(base / "postgres.log"), "-w", "-t", "60",
            "start")
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        log = base / "postgres.log"
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        cluster.stop()
        raise RuntimeError(f"{exc} {tail}".strip()) from None
    return cluster


def with_schema(url: str, schema: str) -> str:
    """``url`` with its search_path set to ``schema`` (a separate ledger in the same database)."""
    option = quote(f"-csearch_path={schema}", safe="")
    return f"{url}{'&' if '?' in url else '?'}options={option}"


def fresh_schema(url: str) -> str:
    """Create an empty schema; the URL of a ledger that lives in it."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return with_schema(url, schema)
