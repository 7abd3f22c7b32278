# -*- test-case-name: tests.e2e.test_processes -*-
"""
The helpers that run real processes for the end-to-end tests: how a
command's end is judged, and which code the children import.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

from twisted.trial.unittest import TestCase

from tests.processes import REPO, ServerProcess, assert_ok, eventually, run

SH = "/bin/sh"
WHERE = "import devpi_tx; print(devpi_tx.__file__)"


def _status(url: str) -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(f"{url}/+status", headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["result"]  # type: ignore[no-any-return]


class RunVerdictTests(TestCase):
    async def test_exit_zero_is_ok(self) -> None:
        """A command that exits 0 is a success."""
        result = await run(["true"])
        self.assertEqual((result.code, result.signal, result.ok), (0, None, True))
        assert_ok(result)

    async def test_exit_status_fails(self) -> None:
        """A command that exits 3 has code 3 and fails L{assert_ok}."""
        result = await run([SH, "-c", "exit 3"])
        self.assertEqual((result.code, result.signal, result.ok), (3, None, False))
        with self.assertRaises(AssertionError):
            assert_ok(result)

    async def test_killed_by_signal_fails(self) -> None:
        """A command killed by SIGKILL has code -9 and signal 9, and fails L{assert_ok}."""
        result = await run([SH, "-c", "kill -9 $$"])
        self.assertEqual((result.code, result.signal, result.ok), (-9, 9, False))
        self.assertIn("killed by signal 9", str(result))
        with self.assertRaises(AssertionError):
            assert_ok(result)

    async def test_killed_after_output_fails(self) -> None:
        """Output a crashed command printed before its end does not make it pass."""
        result = await run([SH, "-c", "echo done; kill -9 $$"])
        self.assertIn("done", result.output)
        with self.assertRaises(AssertionError):
            assert_ok(result, "done")

    async def test_expected_output(self) -> None:
        """L{assert_ok} fails when an expected text is missing from the output."""
        result = await run([SH, "-c", "echo hello"])
        assert_ok(result, "hello")
        with self.assertRaises(AssertionError):
            assert_ok(result, "goodbye")


class CheckoutTests(TestCase):
    timeout = 120

    def decoy(self) -> str:
        """Another checkout on C{PYTHONPATH}: a C{devpi_tx} that cannot serve."""
        path: str = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(path, "devpi_tx"))
        with open(os.path.join(path, "devpi_tx", "__init__.py"), "w") as f:
            f.write('__version__ = "decoy"\n')
        return path

    async def test_commands_import_this_checkout(self) -> None:
        """A command run by the helper imports C{devpi_tx} from the checkout of these tests."""
        result = await run([sys.executable, "-c", WHERE], env={"PYTHONPATH": self.decoy()})
        assert_ok(result)
        self.assertEqual(
            os.path.realpath(result.output.strip()), os.path.realpath(os.path.join(REPO, "devpi_tx", "__init__.py"))
        )

    async def test_server_and_workers_run_this_checkout(self) -> None:
        """The main instance and its worker serve the C{devpi_tx} of the checkout of these tests."""
        server = ServerProcess(self.mktemp(), "--workers", "1", env={"PYTHONPATH": self.decoy()})
        await server.start()
        self.addCleanup(server.stop)
        seen: dict[int, str] = {}

        def both_answered() -> bool:
            status = _status(server.url)
            seen[status["pid"]] = status["server-code"]
            return len(seen) >= 2

        self.assertTrue(await eventually(both_answered, timeout=60), server.output)
        self.assertEqual(set(map(os.path.realpath, seen.values())), {os.path.realpath(os.path.join(REPO, "devpi_tx"))})
