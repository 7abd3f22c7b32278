"""Core benchmark: devpi-server 6.20.3 versus devpi_tx (start-up, RSS, uploads, simple pages).

Everything runs on 127.0.0.1; a fake upstream index stands in for PyPI. See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import requests

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".cache"
RESULTS_DIR = BENCH_DIR / "results"
DEVPI_VERSION = "6.20.3"
JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"
UPLOAD_BATCH = 50
WRK_CONNECTIONS = 32
WRK_THREADS = 2
SERVERS = ("devpi-server", "devpi_tx")
TWISTD = "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; sys.exit(run())"

# (key, label, higher_is_better)
METRICS: list[tuple[str, str, bool | None]] = [
    ("startup_s", "startup s", False),
    ("idle_rss_mb", "idle RSS MB", False),
    ("uploads_per_s", "uploads/s", True),
    ("html_rps", "HTML req/s", True),
    ("html_p99_ms", "HTML p99 ms", False),
    ("json_rps", "JSON req/s", True),
    ("json_p99_ms", "JSON p99 ms", False),
    ("non_2xx", "non-2xx", None),
]


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UpstreamHandler(http.server.BaseHTTPRequestHandler):
    hits = 0
    root_page = b"<!DOCTYPE html><html><head><title>Simple index</title></head><body></body></html>\n"

    def do_GET(self) -> None:
        UpstreamHandler.hits += 1
        found = self.path.split("?")[0] == "/simple/"
        body = self.root_page if found else b"not found\n"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def build_wheel(path: Path, name: str, version: str) -> None:
    mod = name.replace("-", "_")
    info = f"{mod}-{version}.dist-info"
    files = {
        f"{mod}.py": f'"""{name} {version}"""\nVERSION = "{version}"\n',
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: Benchmark package {name}\n"
        ),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: core_bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for fname, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
        record.append(f"{fname},sha256={digest.decode()},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for fname, text in files.items():
            zf.writestr(zipfile.ZipInfo(fname, (2020, 1, 1, 0, 0, 0)), text)
    tmp.replace(path)


def ensure_wheels(projects: int, versions: int) -> dict[str, list[Path]]:
    wdir = CACHE_DIR / "wheels"
    wdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, list[Path]] = {}
    for i in range(1, projects + 1):
        name = f"bench-pkg-{i:04d}"
        out[name] = [wdir / f"{name.replace('-', '_')}-1.0.{j}-py3-none-any.whl" for j in range(versions)]
        for j, path in enumerate(out[name]):
            if not path.exists():
                build_wheel(path, name, f"1.0.{j}")
    return out


def ensure_devpi_venv() -> Path:
    env_dir = os.environ.get("DEVPI_VENV")
    venv = Path(env_dir) if env_dir else CACHE_DIR / "devpi-venv"
    exe = venv / "bin" / "devpi-server"
    if exe.exists():
        ver = subprocess.run([str(exe), "--version"], check=False, capture_output=True, text=True)
        if DEVPI_VERSION in ver.stdout + ver.stderr:
            return venv
        if env_dir:
            raise SystemExit(f"DEVPI_VENV={venv} does not hold devpi-server {DEVPI_VERSION}")
    log(f"creating {venv} with devpi-server=={DEVPI_VERSION}")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, f"devpi-server=={DEVPI_VERSION}"], check=True)
    return venv


def tree_rss_kb(root_pid: int) -> int:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log(f"pid {proc.pid} ignored SIGTERM, sending SIGKILL")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class Client:
    def __init__(self, base: str) -> None:
        self.base, self.http = base, requests.Session()
        self.http.headers.update({"Accept": "application/json", "Content-Type": "application/json"})

    def call(self, method: str, path: str, data: Any = None) -> Any:
        r = self.http.request(method, self.base + path, data=None if data is None else json.dumps(data))
        if r.status_code >= 300:
            raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text[:300]}")
        return r.json() if r.content else None

    def login(self, user: str, password: str) -> None:
        self.http.headers.pop("X-Devpi-Auth", None)
        token = self.call("POST", "/+login", {"user": user, "password": password})["result"]["password"]
        auth = base64.b64encode(f"{user}:{token}".encode()).decode()
        self.http.headers["X-Devpi-Auth"] = auth


def wait_ready(proc: subprocess.Popen[bytes], url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if requests.get(url + "/+api", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"server not ready after {timeout}s")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def setup_alice_dev(base: str, upstream: str) -> None:
    """As root: point root/pypi at upstream; create alice (password pw) and alice/dev on root/pypi."""
    api = Client(base)
    api.login("root", "")
    api.call("PATCH", "/root/pypi", [f"mirror_url={upstream}"])
    api.call("PUT", "/alice", {"password": "pw", "email": "a@x"})
    api.login("alice", "pw")
    api.call("PUT", "/alice/dev", {"bases": ["root/pypi"]})


def upload(base: str, files: list[Path], workdir: Path) -> float:
    start = time.monotonic()
    for i in range(0, len(files), UPLOAD_BATCH):
        batch = [str(f) for f in files[i : i + UPLOAD_BATCH]]
        cmd = [sys.executable, "-m", "twine", "upload", "--non-interactive",
               "--repository-url", f"{base}/alice/dev/", "-u", "alice", "-p", "pw",
               "--disable-progress-bar", *batch]  # fmt: skip
        res = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=workdir)
        if res.returncode != 0:
            raise RuntimeError(f"twine failed ({res.returncode}):\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    return len(files) / (time.monotonic() - start)


def verify_simple(base: str, wheels: dict[str, list[Path]], accept: str | None) -> None:
    names = list(wheels)
    for name in {names[0], names[len(names) // 2], names[-1]}:
        url = f"{base}/alice/dev/+simple/{name}/"
        r = requests.get(url, headers={"Accept": accept} if accept else {}, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"GET {url} ({accept}) -> {r.status_code}")
        if accept == JSON_ACCEPT:
            if JSON_ACCEPT not in r.headers.get("Content-Type", ""):
                raise RuntimeError(f"GET {url}: content-type {r.headers.get('Content-Type')!r}")
            body = " ".join(f["filename"] for f in r.json()["files"])
        else:
            body = r.text
        missing = [p.name for p in wheels[name] if p.name not in body]
        if missing:
            raise RuntimeError(f"GET {url} ({accept}) lacks {missing}")


WRK_LUA = """
local paths = {%s}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) non2xx = 0; math.randomseed(os.time() + math.floor(os.clock() * 1e6)) end
function request() return wrk.format("GET", paths[math.random(#paths)]) end
function response(status, headers, body) if status < 200 or status > 299 then non2xx = non2xx + 1 end end
function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do bad = bad + t:get("non2xx") end
  local e = summary.errors
  io.write(string.format("BENCH_RESULT requests=%%d duration_us=%%d p50_us=%%d p99_us=%%d non2xx=%%d "
    .. "socket_errors=%%d timeouts=%%d\\n", summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), bad, e.connect + e.read + e.write, e.timeout))
end
"""


def run_wrk(base: str, names: list[str], accept: str | None, duration: int, workdir: Path,
            pace_rps: float | None = None) -> dict[str, Any]:  # fmt: skip
    """
    wrk on random simple pages; as fast as it goes, or paced: each connection waits
    WRK_CONNECTIONS / pace_rps seconds before its next request (about pace_rps in all).
    """
    script = workdir / "simple.lua"
    paths = ", ".join(f'"/alice/dev/+simple/{n}/"' for n in names)
    pacing = f"function delay() return {1000.0 * WRK_CONNECTIONS / pace_rps:.3f} end\n" if pace_rps else ""
    script.write_text(WRK_LUA % paths + pacing)
    cmd = ["wrk", "-t", str(WRK_THREADS), "-c", str(WRK_CONNECTIONS), "-d", f"{duration}s",
           "--timeout", "10s", "--latency", "-s", str(script)]  # fmt: skip
    if accept:
        cmd += ["-H", f"Accept: {accept}"]
    res = subprocess.run([*cmd, base + "/"], check=False, capture_output=True, text=True, timeout=duration + 60)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if res.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    vals = {k: int(float(v)) for k, v in (kv.split("=") for kv in line.split()[1:])}
    return {
        "rps": round(vals["requests"] / (vals["duration_us"] / 1e6), 1),
        "p50_ms": vals["p50_us"] / 1000,
        "p99_ms": vals["p99_us"] / 1000,
        **{k: vals[k] for k in ("requests", "non2xx", "socket_errors", "timeouts")},
    }


def spawn_server(devpi_venv: Path | None, work: Path,
                 extra_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], str, dict[str, float]]:  # fmt: skip
    """
    Spawn devpi-server (from devpi_venv) or devpi_tx (devpi_venv None) on a free port, server dir work/server,
    output to work/server.log, as leader of its own process group (stop() kills the group).
    extra_args are appended to the server's command line (e.g. ("--workers", "2") for devpi_tx).
    Does not wait for readiness. Returns the process, its base URL and times: "spawned" (monotonic)
    and "init_s" (devpi-init, devpi-server only).
    """
    sdir, logfile, port = work / "server", work / "server.log", free_port()
    base = f"http://127.0.0.1:{port}"
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=pythonpath)
    common = ["--serverdir", str(sdir), "--host", "127.0.0.1", "--port", str(port)]
    times: dict[str, float] = {}
    if devpi_venv is not None:  # devpi-server needs an explicit init step; devpi_tx does it on first start
        t0 = time.monotonic()
        subprocess.run([str(devpi_venv / "bin" / "devpi-init"), *common[:2]], check=True, capture_output=True)
        times["init_s"] = round(time.monotonic() - t0, 3)
        cmd = [str(devpi_venv / "bin" / "devpi-server"), *common]
    else:  # twistd -n, with the repo root importable so that twisted/plugins/ is found
        cmd = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "devpi", *common]
    cmd += extra_args
    with logfile.open("wb") as logf:
        times["spawned"] = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, base, times


def bench_server(which: str, devpi_venv: Path | None, upstream: str,
                 wheels: dict[str, list[Path]], duration: int) -> dict[str, Any]:  # fmt: skip
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix=f"bench-{which}-") as tmp:
        work = Path(tmp)
        logfile = work / "server.log"
        proc, base, times = spawn_server(devpi_venv, work)
        if "init_s" in times:
            res["init_s"] = times["init_s"]
        try:
            wait_ready(proc, base)
            res["startup_s"] = round(time.monotonic() - times["spawned"], 3)
            time.sleep(1.0)
            res["idle_rss_mb"] = round(tree_rss_kb(proc.pid) / 1024, 1)
            log(f"{which}: up on {base} in {res['startup_s']}s, RSS {res['idle_rss_mb']} MB")

            setup_alice_dev(base, upstream)

            files = [p for ps in wheels.values() for p in ps]
            log(f"{which}: uploading {len(files)} files")
            res["uploads_per_s"] = round(upload(base, files, work), 2)
            log(f"{which}: {res['uploads_per_s']} uploads/s")

            res["non_2xx"] = 0
            for kind, accept in (("html", None), ("json", JSON_ACCEPT)):
                try:
                    verify_simple(base, wheels, accept)
                    out = run_wrk(base, list(wheels), accept, duration, work)
                except Exception as exc:
                    log(f"{which}: {kind} load test failed: {exc}")
                    res[f"{kind}_error"] = str(exc)
                    continue
                res[f"{kind}_wrk"] = out
                res[f"{kind}_rps"], res[f"{kind}_p99_ms"] = out["rps"], out["p99_ms"]
                res["non_2xx"] += out["non2xx"]
                log(f"{which}: {kind} {out['rps']} req/s, p99 {out['p99_ms']} ms, "
                    f"non-2xx {out['non2xx']}, socket errors {out['socket_errors']}")  # fmt: skip
            res["rss_after_load_mb"] = round(tree_rss_kb(proc.pid) / 1024, 1)
        except Exception:
            log(f"{which}: server log tail:\n{tail(logfile)}")
            raise
        finally:
            stop(proc)
    return res


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    return f"{v:,.2f}" if isinstance(v, float) else f"{v:,}"


def table(results: dict[str, dict[str, Any]]) -> str:
    a, b = (results.get(s, {}) for s in SERVERS)
    rows = ["| metric | devpi-server | devpi_tx | ratio (>1 = devpi_tx better) |",
            "|---|---:|---:|---|"]  # fmt: skip
    for key, label, higher in METRICS:
        va, vb = a.get(key), b.get(key)
        ratio = "n/a"
        if higher is not None and va and vb:
            r, how = (vb / va, "devpi_tx/devpi-server") if higher else (va / vb, "devpi-server/devpi_tx")
            ratio = f"{r:.2f}x ({how})"
        rows.append(f"| {label} | {fmt(va)} | {fmt(vb)} | {ratio} |")
    return "\n".join(rows)


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        raise SystemExit("wrk not found: install it (apt-get install -y wrk)")
    log("installing wrk with apt-get")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--projects", type=int, default=200)
    p.add_argument("--versions", type=int, default=5)
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    p.add_argument("--only", choices=["devpi", "devpi_tx"])
    args = p.parse_args()
    which = [s for s in SERVERS if args.only is None or s == {"devpi": "devpi-server"}.get(args.only, args.only)]

    ensure_wrk()
    devpi_venv = ensure_devpi_venv() if "devpi-server" in which else None
    wheels = ensure_wheels(args.projects, args.versions)
    upstream_srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), UpstreamHandler)
    threading.Thread(target=upstream_srv.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{upstream_srv.server_address[1]}/simple/"
    log(f"fake upstream at {upstream}; {args.projects}x{args.versions} wheels ready")

    results: dict[str, dict[str, Any]] = {}
    failed = False
    for server in which:
        try:
            venv = devpi_venv if server == "devpi-server" else None
            results[server] = bench_server(server, venv, upstream, wheels, args.duration)
        except Exception as exc:
            log(f"{server}: FAILED: {exc}")
            results[server] = {"error": str(exc)}
            failed = True
        failed |= any(k.endswith("_error") for k in results[server])
    upstream_srv.shutdown()

    print(table(results))
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS_DIR / f"core-{stamp}.json"
    meta = {"timestamp": stamp, "projects": args.projects, "versions": args.versions, "duration_s": args.duration,
            "wrk_threads": WRK_THREADS, "wrk_connections": WRK_CONNECTIONS, "upload_batch": UPLOAD_BATCH,
            "devpi_server_version": DEVPI_VERSION, "python": sys.version.split()[0], "cpus": os.cpu_count(),
            "upstream_requests": UpstreamHandler.hits}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"\nresults written to {out.relative_to(REPO_ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
