"""A real PostgreSQL for the spool's PostgreSQL engine: one private cluster per test
session (cluster.py: started as ``postgres`` when we are root, 127.0.0.1 and a unix
socket in its temp dir only, fsync on), and a fresh schema for every test.

Without PostgreSQL's server binaries the tests skip, or fail under
SMTPX_REQUIRE_INTEROP=1 (CI installs Debian's postgresql package: see .ci/run).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from smtpx.spool.pg.queue import connect_pool
from smtpx.testing.postgres import Cluster
from tests.spool.pg.helpers import private_cluster

_schemas = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    yield from private_cluster()


@pytest.fixture(scope="session")
def pg_database(pg_cluster: Cluster) -> str:
    """The tests' database; each test has a schema of its own in it (below)."""
    pg_cluster.sql("CREATE DATABASE smtpx_tests TEMPLATE template0")
    return "smtpx_tests"


@pytest.fixture
async def pg_dsn(pg_cluster: Cluster, pg_database: str) -> str:
    """The DSN of a fresh, empty schema of this test's own, first on its search_path: the
    way an operator gives smtpx a schema of its own. A few milliseconds, where CREATE
    DATABASE took 200-300 ms (fsync on). Left for the cluster's removal at the end."""
    schema = f"test_{next(_schemas)}"
    conn = await asyncpg.connect(pg_cluster.dsn(pg_database))
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return pg_cluster.dsn(pg_database) + f"?options=-csearch_path%3D{schema}"


@pytest.fixture
async def pg_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the test's database, set up as the queue wants it (no schema yet)."""
    pool = await connect_pool(pg_dsn, size=4)
    try:
        yield pool
    finally:
        await pool.close()
