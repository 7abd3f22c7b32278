"""
End to end: a devpi_tx server process on 127.0.0.1 driven by the real
devpi-client, twine, pip and uv.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

from twisted.trial.unittest import TestCase

from tests.processes import Result, ServerProcess, assert_ok, bin_path, eventually, run, uv_install

PYPROJECT = """\
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
description = "an end-to-end test package"
requires-python = ">=3.8"
"""
TOX_INI = """\
[tox]
envlist = py
[testenv]
skip_install = true
commands = python -c "print('tox ran')"
"""


def make_project(base: str, name: str, version: str) -> str:
    """A buildable project with Sphinx docs and a tox.ini."""
    path = os.path.join(base, f"{name}-{version}")
    module = name.replace("-", "_")
    os.makedirs(os.path.join(path, module))
    os.makedirs(os.path.join(path, "doc"))
    with open(os.path.join(path, "pyproject.toml"), "w") as f:
        f.write(PYPROJECT.format(name=name, version=version))
    with open(os.path.join(path, module, "__init__.py"), "w") as f:
        f.write(f"VERSION = {version!r}\n")
    with open(os.path.join(path, "tox.ini"), "w") as f:
        f.write(TOX_INI)
    with open(os.path.join(path, "MANIFEST.in"), "w") as f:
        f.write("include tox.ini\n")
    with open(os.path.join(path, "doc", "conf.py"), "w") as f:
        f.write(f"project = {name!r}\n")
    with open(os.path.join(path, "doc", "index.rst"), "w") as f:
        f.write(f"{name}\n{'=' * len(name)}\n\nDocumentation.\n")
    return path


def get_json(url: str, accept: str = "application/json") -> dict:  # type: ignore[type-arg]
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


class _ServerCase(TestCase):
    timeout = 900

    async def start_server(self, *args: str) -> ServerProcess:
        server = ServerProcess(self.mktemp(), *args)
        await server.start()
        self.addCleanup(server.stop)
        return server

    def assert_ok(self, result: Result, *expected: str) -> None:
        """Fails unless the command exited 0 (not killed) and printed each of C{expected}."""
        assert_ok(result, *expected)


class DevpiClientTests(_ServerCase):
    async def test_devpi_client_scenario(self) -> None:
        """devpi-client 7 manages users and indexes, uploads, lists, tests, pushes and removes."""
        server = await self.start_server()
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        clientdir = os.path.join(work, "client")
        devpi_bin = bin_path("devpi")

        async def devpi(*args: str, cwd: str | None = None) -> Result:
            return await run([devpi_bin, *args, "--clientdir", clientdir], cwd=cwd)

        self.assert_ok(await devpi("use", server.url), f"using server: {server.url}/")
        self.assert_ok(await devpi("login", "root", "--password", ""), "logged in 'root'")
        self.assert_ok(
            await devpi("user", "-c", "alice", "password=secret", "email=alice@example.org"), "user created: alice"
        )
        self.assert_ok(await devpi("user", "-c", "bob", "password=bobpw"), "user created: bob")
        self.assert_ok(await devpi("login", "alice", "--password", "secret"), "logged in 'alice'")
        self.assert_ok(await devpi("index", "-c", "dev", "bases=root/pypi"), "bases=root/pypi", "volatile=True")
        self.assert_ok(
            await devpi("use", "alice/dev"), f"current devpi index: {server.url}/alice/dev (logged in as alice)"
        )
        self.assert_ok(await devpi("index", "dev", "volatile=False"), "volatile=False")
        self.assert_ok(await devpi("index", "dev", "acl_upload+=bob"), "acl_upload=alice,bob")
        self.assert_ok(await devpi("index", "-c", "prod", "volatile=False"), "volatile=False")

        project = make_project(work, "hello-e2e", "1.0")
        self.assert_ok(
            await devpi("upload", "--no-isolation", "--with-docs", cwd=project),
            "1.0.tar.gz to",
            "file_upload of hello_e2e-1.0-py3-none-any.whl",
            "doc_upload of hello-e2e-1.0.doc.zip",
        )
        self.assert_ok(await devpi("list"), "hello-e2e")
        listed = await devpi("list", "hello-e2e")
        self.assert_ok(listed, f"{server.url}/alice/dev/+f/", "hello_e2e-1.0-py3-none-any.whl")
        docs_url = f"{server.url}/alice/dev/hello-e2e/1.0/+doc/index.html"
        self.assertTrue(await eventually(lambda: _status_of(docs_url) == 200), "docs unpacked and served")
        self.assertTrue(await eventually(lambda: _status_of(f"{server.url}/alice/dev/hello-e2e/+latest/+doc/") == 200))
        found = await eventually(lambda: get_json(f"{server.url}/+search?q=hello")["result"])
        self.assertEqual([(r["stage"], r["project"]) for r in found], [("alice/dev", "hello-e2e")])
        tested = await devpi("test", "hello-e2e==1.0")
        self.assert_ok(tested, "tox ran", "posting tox result data", "success")
        versiondata = get_json(f"{server.url}/alice/dev/hello-e2e/1.0")["result"]
        rels = sorted(link["rel"] for link in versiondata["+links"])
        self.assertEqual(rels, ["doczip", "releasefile", "releasefile", "toxresult"])

        pushed = await devpi("push", "hello-e2e==1.0", "alice/prod")
        self.assert_ok(
            pushed, "200 register hello-e2e 1.0 -> alice/prod", "store_releasefile alice/prod/+f/", "store_doczip"
        )
        prod = get_json(f"{server.url}/alice/prod/hello-e2e/1.0")["result"]
        self.assertEqual(sorted(link["rel"] for link in prod["+links"]), rels)

        venv = os.path.join(work, "venv")
        self.assert_ok(await run([sys.executable, "-m", "venv", venv]))
        self.assert_ok(await devpi("install", "--venv", venv, "hello-e2e"))
        shown = await run([os.path.join(venv, "bin", "python"), "-c", "import hello_e2e; print(hello_e2e.VERSION)"])
        self.assert_ok(shown, "1.0")

        self.assert_ok(await devpi("user", "-m", "alice", "email=new@example.org"), "user modified: alice")
        self.assertEqual(get_json(f"{server.url}/alice")["result"]["email"], "new@example.org")
        refused = await devpi("remove", "-y", "hello-e2e==1.0")
        self.assertIn("403", refused.output, str(refused))
        self.assert_ok(await devpi("remove", "-y", "--force", "hello-e2e==1.0"), "deleting release 1.0 of hello-e2e")
        self.assertNotIn("hello-e2e", get_json(f"{server.url}/alice/dev")["result"]["projects"])

        self.assert_ok(await devpi("index", "-c", "scratch"))
        self.assert_ok(await devpi("index", "-y", "--delete", "scratch"), "index deleted")
        self.assert_ok(await devpi("login", "bob", "--password", "bobpw"), "logged in 'bob'")
        self.assert_ok(await devpi("user", "-y", "--delete", "bob"), "user deleted: bob")
        version = await devpi("--version")
        self.assert_ok(version, "devpi_tx")


class InstallerTests(_ServerCase):
    async def test_twine_pip_uv(self) -> None:
        """twine uploads (with and without trailing slash); pip and uv install from fresh venvs."""
        server = await self.start_server()
        work = os.path.abspath(self.mktemp())
        os.makedirs(work)
        token = get_json_post(f"{server.url}/+login", {"user": "root", "password": ""})["result"]["password"]
        put_json(f"{server.url}/alice", {"password": "pw"}, ("root", token))
        put_json(f"{server.url}/alice/dev", {}, ("alice", "pw"))
        dists = []
        for version in ("1.0", "2.0"):
            project = make_project(work, "twined", version)
            built = await run(
                [sys.executable, "-m", "build", "--no-isolation", "--outdir", os.path.join(work, version), project]
            )
            self.assert_ok(built)
            dists.append(os.path.join(work, version))
        for url, dist in ((f"{server.url}/alice/dev/", dists[0]), (f"{server.url}/alice/dev", dists[1])):
            files = [os.path.join(dist, f) for f in sorted(os.listdir(dist))]
            result = await run(
                [
                    sys.executable,
                    "-m",
                    "twine",
                    "upload",
                    "--disable-progress-bar",
                    "--repository-url",
                    url,
                    "-u",
                    "alice",
                    "-p",
                    "pw",
                    *files,
                ]
            )
            self.assert_ok(result)
        bad = await run(
            [
                sys.executable,
                "-m",
                "twine",
                "upload",
                "--non-interactive",
                "--repository-url",
                f"{server.url}/alice/dev/",
                "-u",
                "alice",
                "-p",
                "wrong",
                files[0],
            ]
        )
        self.assertGreater(bad.code, 0, str(bad))
        self.assertIn("401", bad.output)
        page = get_json(f"{server.url}/alice/dev/+simple/twined/", "application/vnd.pypi.simple.v1+json")
        self.assertEqual(page["versions"], ["1.0", "2.0"])

        index = f"{server.url}/alice/dev/+simple/"
        pipvenv = os.path.join(work, "pipvenv")
        self.assert_ok(await run([sys.executable, "-m", "venv", pipvenv]))
        pip = os.path.join(pipvenv, "bin", "pip")
        self.assert_ok(
            await run(
                [pip, "install", "--no-cache-dir", "--index-url", index, "twined==1.0"],
                env={"PIP_CONFIG_FILE": os.devnull},
            ),
            "Successfully installed twined-1.0",
        )
        self.assert_ok(
            await run(
                [pip, "install", "--no-cache-dir", "--index-url", index, "--upgrade", "twined"],
                env={"PIP_CONFIG_FILE": os.devnull},
            ),
            "Successfully installed twined-2.0",
        )
        uv = await uv_install(work, index, "twined==2.0")
        self.assert_ok(uv, "twined==2.0")


def _status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def _auth_header(auth: tuple[str, str] | None) -> dict[str, str]:
    import base64

    if auth is None:
        return {}
    return {"X-Devpi-Auth": base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()}


def _send(method: str, url: str, body: object, auth: tuple[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    headers = {"Accept": "application/json", "Content-Type": "application/json", **_auth_header(auth)}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def get_json_post(url: str, body: object) -> dict:  # type: ignore[type-arg]
    return _send("POST", url, body)


def put_json(url: str, body: object, auth: tuple[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    return _send("PUT", url, body, auth)
