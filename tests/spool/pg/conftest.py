"""A real PostgreSQL for the spool's PostgreSQL engine: one private cluster per test
session (cluster.py: started as ``postgres`` when we are root, 127.0.0.1 and a unix
socket in its temp dir only, fsync on), and a fresh database for every test.

Without PostgreSQL's server binaries the tests skip, or fail under
SMTPX_REQUIRE_INTEROP=1 (CI installs Debian's postgresql package: see .ci/run).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.conftest import _missing
from tests.spool.pg.cluster import Cluster, MissingPostgres, start_cluster

_databases = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    try:
        cluster = start_cluster()
    except MissingPostgres as exc:
        _missing(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_dsn(pg_cluster: Cluster) -> str:
    """The DSN of a database of this test's own (CREATE DATABASE from template0: about
    50 ms; left for the cluster's removal at the end of the session)."""
    name = f"test_{next(_databases)}"
    pg_cluster.sql(f"CREATE DATABASE {name} TEMPLATE template0")
    return pg_cluster.dsn(name)
