"""The private test cluster is what the tests rely on: durable, local, not root's."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import asyncpg
import pytest

from smtpx.testing.postgres import OWNER, Cluster

pytestmark = pytest.mark.interop


def test_the_test_server_commits_durably(pg_cluster: Cluster) -> None:
    assert pg_cluster.sql("SHOW fsync") == "on"
    assert pg_cluster.sql("SHOW synchronous_commit") == "on"
    assert pg_cluster.sql("SHOW full_page_writes") == "on"


def test_it_listens_on_loopback_and_its_own_socket_only(pg_cluster: Cluster) -> None:
    assert pg_cluster.sql("SHOW listen_addresses") == "127.0.0.1"
    assert pg_cluster.sql("SHOW unix_socket_directories") == str(pg_cluster.sockets)
    assert pg_cluster.sockets.parent == pg_cluster.root
    assert (pg_cluster.sockets / f".s.PGSQL.{pg_cluster.port}").exists()


def test_it_runs_as_postgres_when_we_are_root(pg_cluster: Cluster) -> None:
    data = Path(pg_cluster.sql("SHOW data_directory"))
    assert data == pg_cluster.data
    owner = pwd.getpwuid(data.stat().st_uid).pw_name
    assert owner == (OWNER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name)
    assert data.stat().st_mode & 0o077 == 0  # initdb's 0700


async def test_each_test_gets_an_empty_schema_of_its_own(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        schema = await conn.fetchval("SELECT current_schema()")
        assert schema.startswith("test_")
        assert await conn.fetchval("SELECT count(*) FROM pg_class WHERE relkind = 'r'") > 0
        tables = "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
        assert await conn.fetchval(tables) == 0
    finally:
        await conn.close()
