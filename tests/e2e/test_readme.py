# -*- test-case-name: tests.e2e.test_readme -*-
"""
The README's two commands hold: CI runs the test command verbatim, and the
test command installs every system program the tests drive.
"""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.processes import REPO, assert_ok, bin_path, run

# the system programs the tests run, and the Debian package of each
SYSTEM_TOOLS = {"nginx": "nginx", "systemd-analyze": "systemd", "unshare": "util-linux"}


def _read(*parts: str) -> str:
    with open(os.path.join(REPO, *parts), encoding="utf-8") as f:
        return f.read()


def readme_commands() -> list[str]:
    """The literal blocks of the README's first section, in order."""
    text = _read("README.rst").split("\nUsing it\n")[0]
    return [block.strip() for block in re.findall(r"::\n\n((?:    .*\n)+)", text)]


class ReadmeTests(SynchronousTestCase):
    def test_two_commands(self) -> None:
        """The README starts with two commands: start the server, and test it."""
        start, test = readme_commands()
        self.assertIn("twistd -n devpi", start)
        self.assertEqual(test, "bash tests/run.sh")

    def test_ci_runs_the_test_command(self) -> None:
        """C{.ci/run} runs the README's test command verbatim."""
        _, test = readme_commands()
        self.assertIn(f"( {test} )", _read(".ci", "run"))

    def test_run_script_installs_the_tools(self) -> None:
        """C{tests/run.sh} checks for every system program the tests run, and names its package."""
        script = _read("tests", "run.sh")
        for tool, package in SYSTEM_TOOLS.items():
            self.assertIn(f"command -v {tool} ", script)
            self.assertIn(f"missing+=({package})", script)
        used = set()
        for dirpath, _, filenames in os.walk(os.path.join(REPO, "tests")):
            for name in filenames:
                if name.startswith("test_") and name.endswith(".py") and name != "test_readme.py":
                    with open(os.path.join(dirpath, name), encoding="utf-8") as f:
                        text = f.read()
                    used |= {tool for tool in SYSTEM_TOOLS if re.search(rf'["/]{re.escape(tool)}["\s]', text)}
        self.assertEqual(used, set(SYSTEM_TOOLS), "a tool listed here that no test uses, or the reverse")
        # PostgreSQL's server binaries are not on PATH: the script checks the one the tests start
        with open(os.path.join(REPO, "tests", "pgcluster.py"), encoding="utf-8") as f:
            bindir = re.search(r'BINDIR = "([^"]+)"', f.read())
        assert bindir is not None
        self.assertIn(f"[ -x {bindir.group(1)}/postgres ] || missing+=(postgresql-15)", script)


class InstalledPluginTests(TestCase):
    async def test_twistd_lists_devpi_as_installed(self) -> None:
        """
        The installed C{twistd} lists the plugin without this checkout on
        C{PYTHONPATH}: the install the README makes keeps it visible.
        """
        listed = await run([bin_path("twistd"), "--help"], cwd="/", checkout=False)
        assert_ok(listed)
        self.assertRegex(listed.output, r"\n\s+devpi\s+A private Python package index")
