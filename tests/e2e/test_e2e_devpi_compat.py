# -*- test-case-name: tests.e2e.test_e2e_devpi_compat -*-
"""
What devpi-client noticed where devpi_tx answered otherwise than
devpi-server: run with the real client against a server process and a fake
upstream on 127.0.0.1.
"""

from __future__ import annotations

import os

from tests.e2e.test_e2e_clients import _ServerCase
from tests.e2e.test_e2e_mirror import MirrorServerMixin
from tests.processes import Result, bin_path, run


class DevpiClientCompatTests(MirrorServerMixin, _ServerCase):
    async def test_base_spec_and_empty_mirror_project(self) -> None:
        """
        C{devpi index -c root/hello bases=/root/pypi} works as on devpi; a
        mirror project upstream lists without release files lists nothing
        and exits 0; an error's message reaches the user.
        """
        server, up = await self.start()
        up.projects["empty"] = []
        clientdir = os.path.abspath(self.mktemp())

        async def devpi(*args: str) -> Result:
            return await run([bin_path("devpi"), *args, "--clientdir", clientdir])

        self.assert_ok(await devpi("use", server.url))
        self.assert_ok(await devpi("login", "root", "--password", ""))
        self.assert_ok(await devpi("index", "-c", "root/hello", "bases=/root/pypi"))
        self.assert_ok(await devpi("index", "root/hello"), "bases=root/pypi")
        self.assert_ok(await devpi("use", "root/pypi"))
        listed = await devpi("list", "empty")
        self.assert_ok(listed)
        self.assertNotIn("empty", listed.output.replace(f"{server.url}/root/pypi", ""))
        refused = await devpi("index", "root/hello", "bases=root/hello")
        self.assertGreater(refused.code, 0, str(refused))
        self.assertIn("index 'root/hello' cannot be a base of itself", refused.output)
