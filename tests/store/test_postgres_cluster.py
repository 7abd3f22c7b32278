# -*- test-case-name: tests.store.test_postgres_cluster -*-
"""
The throwaway PostgreSQL cluster the PostgreSQL store's tests will run on,
reached through txpostgres as the store will reach it.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase
from txpostgres import txpostgres

from tests.pgcluster import Cluster


class ClusterTests(TestCase):
    timeout = 120

    async def test_query_through_txpostgres(self) -> None:
        """A fresh cluster answers a query through txpostgres, without blocking the reactor."""
        cluster = await Cluster().start()
        self.addCleanup(cluster.stop)
        connection = txpostgres.Connection()
        await connection.connect(cluster.dsn)
        self.addCleanup(connection.close)
        rows = await connection.runQuery("SELECT 1 + 1, current_setting('server_version_num')::int / 10000")
        self.assertEqual(rows, [(2, 15)])
