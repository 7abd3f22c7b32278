"""Mirror benchmark: root/pypi of devpi-server 6.20.3 versus devpi_tx, both in front of a local nginx upstream.

Installs a fixed package set with pip and uv (cold and warm server) and fetches a large root project list.
Everything runs on 127.0.0.1; the public PyPI is only used to fill the wheelhouse once. See bench/README.md.
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_bench import (
    CACHE_DIR,
    DEVPI_VERSION,
    JSON_ACCEPT,
    REPO_ROOT,
    RESULTS_DIR,
    Client,
    ensure_devpi_venv,
    free_port,
    log,
    spawn_server,
    stop,
    tail,
    tree_rss_kb,
    wait_ready,
)  # fmt: skip

PACKAGES = ["requests", "flask", "pytest", "attrs", "pyyaml", "python-dateutil", "rich", "httpx",
            "pydantic", "jsonschema", "tomli", "platformdirs", "tqdm", "filelock", "packaging"]  # fmt: skip
IMPORTS = ["requests", "flask", "pytest", "attr", "yaml", "dateutil", "rich", "httpx",
           "pydantic", "jsonschema", "tomli", "platformdirs", "tqdm", "filelock", "packaging"]  # fmt: skip
TARGETS = ("direct", "devpi-server", "devpi_tx")
WHEELHOUSE = CACHE_DIR / "wheelhouse"
UPSTREAM = CACHE_DIR / "upstream"
ROOT_WARM_RUNS = 5
TIMEOUT = 900.0
# (label, path into a target's results); the value is seconds, MB or bytes as the label says
ROWS: list[tuple[str, tuple[str, ...]]] = [
    ("pip cold s", ("pip", "cold", "s")),
    ("pip warm s", ("pip", "warm", "s")),
    ("uv cold s", ("uv", "cold", "s")),
    ("uv warm s", ("uv", "warm", "s")),
    ("root list JSON cold s", ("root_json", "cold", "s")),
    ("root list JSON warm s", ("root_json", "warm", "s")),
    ("root list HTML cold s", ("root_html", "cold", "s")),
    ("root list HTML warm s", ("root_html", "warm", "s")),
    ("root list JSON MB", ("root_json", "cold", "mb")),
    ("root list HTML MB", ("root_html", "cold", "mb")),
    ("RSS MB", ("rss_mb",)),
]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def ensure_wheelhouse() -> list[Path]:
    wheels = sorted(WHEELHOUSE.glob("*.whl"))
    if wheels:
        return wheels
    log(f"downloading {len(PACKAGES)} packages and their dependencies (wheels only) into {WHEELHOUSE}")
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(WHEELHOUSE), *PACKAGES]
    subprocess.run(cmd, check=True)
    return sorted(WHEELHOUSE.glob("*.whl"))


def wheel_metadata(path: Path) -> Message:
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n))
        return email.parser.Parser().parsestr(zf.read(name).decode("utf-8", "replace"), headersonly=True)


def build_upstream(wheels: list[Path], names: int) -> list[str]:
    """Write the static PEP 503 tree under UPSTREAM; returns the real project names."""
    shutil.rmtree(UPSTREAM, ignore_errors=True)
    (UPSTREAM / "files").mkdir(parents=True)
    links: dict[str, list[str]] = {}
    for whl in wheels:
        meta = wheel_metadata(whl)
        target = UPSTREAM / "files" / whl.name
        try:
            os.link(whl, target)
        except OSError:
            shutil.copyfile(whl, target)
        sha = hashlib.sha256(whl.read_bytes()).hexdigest()
        rp = meta.get("Requires-Python")
        attr = f' data-requires-python="{html.escape(rp.strip())}"' if rp else ""
        links.setdefault(normalize(meta["Name"]), []).append(
            f'<a href="../../files/{whl.name}#sha256={sha}"{attr}>{whl.name}</a><br/>'
        )
    head = '<!DOCTYPE html>\n<html><head><meta name="pypi:repository-version" content="1.0">'
    for name, anchors in links.items():
        page = UPSTREAM / "simple" / name / "index.html"
        page.parent.mkdir(parents=True)
        body = "\n".join([f"<title>Links for {name}</title></head>", f"<body><h1>Links for {name}</h1>", *anchors])
        page.write_text(f"{head}{body}\n</body></html>\n")
    real = sorted(links)
    synthetic = (f"synthetic-pkg-{i:06d}" for i in range(1, max(0, names - len(real)) + 1))
    with (UPSTREAM / "simple" / "index.html").open("w") as f:
        f.write(f"{head}<title>Simple index</title></head>\n<body>\n")
        for name in [*real, *synthetic]:
            f.write(f'<a href="{name}/">{name}</a>\n')
        f.write("</body></html>\n")
    return real


NGINX_CONF = """
{user}worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {work}/access.log;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        index index.html;
        location / {{ try_files $uri $uri/ =404; }}
    }}
}}
"""


def ensure_nginx() -> str:
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(exe):
        if os.geteuid() != 0:
            raise SystemExit("nginx not found: install it (apt-get install -y nginx)")
        log("installing nginx with apt-get")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "nginx"]):
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return exe


def start_nginx(exe: str, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the tree; default would be nobody
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, work=work, port=port, root=UPSTREAM))
    with (work / "nginx.out").open("wb") as out:
        proc = subprocess.Popen([exe, "-p", str(work), "-e", str(work / "error.log"), "-c", str(conf)],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}/simple/"
    for _ in range(200):
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}:\n{tail(work / 'nginx.out')}")
        try:
            requests.head(url, timeout=1).raise_for_status()
            return proc, url
        except requests.RequestException:
            time.sleep(0.05)
    raise RuntimeError("nginx did not answer")


def survivors(pgid: int) -> list[int]:
    """Processes still alive in process group pgid (each server is started as a group leader)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.name.isdigit() and int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


@dataclass
class Served:
    """One running index: nginx itself (direct) or a fresh server with root/pypi pointed at nginx."""

    index: str
    access_log: Path
    pid: int | None = None
    logfile: Path | None = None

    def rss_mb(self) -> float | None:
        return None if self.pid is None else round(tree_rss_kb(self.pid) / 1024, 1)

    def mark(self) -> tuple[int, int]:
        size = self.logfile.stat().st_size if self.logfile else 0
        return size, count_lines(self.access_log)

    def log_since(self, mark: tuple[int, int]) -> list[str]:
        if self.logfile is None:
            return []
        with self.logfile.open("rb") as f:
            f.seek(mark[0])
            lines = f.read().decode(errors="replace").splitlines()
        return lines if len(lines) <= 60 else [*lines[:40], f"... ({len(lines) - 60} lines left out) ...", *lines[-20:]]


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


@contextmanager
def serving(target: str, devpi_venv: Path | None, upstream: str, nginx_work: Path,
            work: Path, stopped: list[dict[str, Any]]) -> Iterator[Served]:  # fmt: skip
    access = nginx_work / "access.log"
    if target == "direct":
        yield Served(upstream, access)
        return
    proc, base, _ = spawn_server(devpi_venv if target == "devpi-server" else None, work)
    try:
        wait_ready(proc, base)
        api = Client(base)
        api.login("root", "")
        api.call("PATCH", "/root/pypi", [f"mirror_url={upstream}"])
        log(f"{target}: up on {base}, root/pypi -> {upstream}")
        yield Served(f"{base}/root/pypi/+simple/", access, proc.pid, work / "server.log")
    except Exception:
        log(f"{target}: server log tail:\n{tail(work / 'server.log')}")
        raise
    finally:
        stop(proc)
        left = survivors(proc.pid)
        stopped.append({"target": target, "pid": proc.pid, "exit": proc.returncode, "survivors": left})
        if left:
            log(f"{target}: processes left after stop: {left}")


def clean_env() -> dict[str, str]:
    """Environment for pip and uv without any user or site configuration (no extra indexes, find-links...)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PIP_CONFIG_FILE=os.devnull, UV_NO_CONFIG="1", UV_PYTHON_DOWNLOADS="never")
    return env


def uv_exe() -> str:
    local = Path(sys.executable).parent / "uv"
    exe = str(local) if local.exists() else shutil.which("uv")
    if exe is None:
        raise SystemExit("uv not found")
    return exe


VENV_ROOT: list[Path] = []  # where install venvs go (tmpfs by default: disk write-back is not what is measured)


def install(tool: str, index: str, work: Path, expected: set[str]) -> float:
    """One install into a fresh venv; returns the seconds of the install command alone."""
    venv = Path(tempfile.mkdtemp(prefix=f"{tool}-venv-", dir=VENV_ROOT[0] if VENV_ROOT else work))
    env, py = clean_env(), str(venv / "bin" / "python")
    if tool == "pip":
        make = [sys.executable, "-m", "venv", "--clear", str(venv)]
        cmd = [py, "-m", "pip", "install", "-q", "--no-cache-dir", "--disable-pip-version-check", "--no-input",
               "--index-url", index, *PACKAGES]  # fmt: skip
    else:
        make = [uv_exe(), "venv", "-q", "--python", sys.executable, str(venv)]
        cmd = [uv_exe(), "pip", "install", "-q", "--no-cache", "--python", py, "--index-url", index, *PACKAGES]
    try:
        subprocess.run(make, check=True, capture_output=True, env=env, timeout=300)
        t0 = time.monotonic()
        res = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=TIMEOUT)
        seconds = time.monotonic() - t0
        if res.returncode != 0:
            raise RuntimeError(f"{tool} install exited {res.returncode}:\n{(res.stdout + res.stderr)[-3000:]}")
        check = ("import importlib, importlib.metadata as m, json, sys\n"
                 f"for mod in {IMPORTS!r}: importlib.import_module(mod)\n"
                 "print(json.dumps([d.metadata['Name'] for d in m.distributions()]))")  # fmt: skip
        res = subprocess.run([py, "-c", check], check=False, capture_output=True, text=True, env=env, timeout=120)
        if res.returncode != 0:
            raise RuntimeError(f"{tool}: installed packages do not import:\n{res.stderr[-2000:]}")
        missing = expected - {normalize(n) for n in json.loads(res.stdout)}
        if missing:
            raise RuntimeError(f"{tool}: not installed: {sorted(missing)}")
        return round(seconds, 3)
    finally:
        shutil.rmtree(venv, ignore_errors=True)


def fetch_root(index: str, accept: str, names: int) -> dict[str, Any]:
    t0 = time.monotonic()
    r = requests.get(index, headers={"Accept": accept}, timeout=TIMEOUT)
    seconds = time.monotonic() - t0
    if r.status_code != 200:
        raise RuntimeError(f"GET {index} ({accept}) -> {r.status_code}: {r.text[:300]}")
    ctype = r.headers.get("Content-Type", "")
    listed = len(r.json()["projects"]) if JSON_ACCEPT in ctype else r.text.count("<a ")
    if listed != names:
        raise RuntimeError(f"GET {index} ({accept}) lists {listed} projects, upstream has {names}")
    return {"s": round(seconds, 3), "mb": round(len(r.content) / 1e6, 2), "bytes": len(r.content), "projects": listed,
            "content_type": ctype, "content_encoding": r.headers.get("Content-Encoding")}  # fmt: skip


def step(res: dict[str, Any], key: str, srv: Served, what: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one measurement; record its result (with upstream request count) or its error and the server's log."""
    mark = srv.mark()
    try:
        res[key] = fn()
        res[key]["upstream_requests"] = count_lines(srv.access_log) - mark[1]
        log(f"{what}: {key} {res[key].get('s')} s, {res[key]['upstream_requests']} upstream requests")
    except Exception as exc:
        res[key] = {"error": str(exc), "server_log": srv.log_since(mark)}
        excerpt = "\n    ".join(res[key]["server_log"])
        log(f"{what}: {key} FAILED: {exc}\n  server log since the step began:\n    {excerpt}")


def root_list(srv: Served, accept: str, names: int, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    step(out, "cold", srv, what, lambda: fetch_root(srv.index, accept, names))

    def warm() -> dict[str, Any]:
        runs = [fetch_root(srv.index, accept, names) for _ in range(ROOT_WARM_RUNS)]
        return {**min(runs, key=lambda r: r["s"]), "runs_s": [r["s"] for r in runs]}

    step(out, "warm", srv, what, warm)
    return out


def installs(tool: str, srv: Served, work: Path, expected: set[str], repeat: int, what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    step(out, "cold", srv, f"{what} {tool}", lambda: {"s": install(tool, srv.index, work, expected)})

    def warm() -> dict[str, Any]:
        runs = [install(tool, srv.index, work, expected) for _ in range(repeat)]
        return {"s": min(runs), "runs_s": runs}

    step(out, "warm", srv, f"{what} {tool}", warm)
    return out


def bench_target(target: str, devpi_venv: Path | None, upstream: str, nginx_work: Path, expected: set[str],
                 names: int, repeat: int, stopped: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """Two fresh servers: root list as JSON then pip, and root list as HTML then uv."""
    res: dict[str, Any] = {}
    rss: list[float] = []
    for fmt_key, accept, tool in (("root_json", JSON_ACCEPT, "pip"), ("root_html", "text/html", "uv")):
        with tempfile.TemporaryDirectory(prefix=f"mirror-{target}-") as tmp:
            try:
                with serving(target, devpi_venv, upstream, nginx_work, Path(tmp), stopped) as srv:
                    res[fmt_key] = root_list(srv, accept, names, f"{target} {fmt_key}")
                    res[tool] = installs(tool, srv, Path(tmp), expected, repeat, target)
                    if (mb := srv.rss_mb()) is not None:
                        res[f"rss_mb_after_{tool}"] = mb
                        rss.append(mb)
            except Exception as exc:
                log(f"{target}: FAILED: {exc}")
                res.setdefault("error", []).append(f"{tool} server: {exc}")
    if rss:
        res["rss_mb"] = max(rss)
    return res


def dig(res: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = res
    for key in path:
        if not isinstance(cur, dict):
            return None
        if "error" in cur and key not in cur:
            return "FAILED"
        cur = cur.get(key)
    return cur


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = ["| metric | direct upstream | devpi-server | devpi_tx | devpi_tx/direct | devpi-server/direct |",
            "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for label, path in ROWS:
        vals = {t: dig(results.get(t, {}), path) for t in TARGETS}
        if label == "RSS MB":
            vals["direct"] = "n/a"
        digits = 3 if label.endswith(" s") else 2 if "list" in label else 1
        cells = [v if isinstance(v, str) else "-" if v is None else f"{v:,.{digits}f}" for v in vals.values()]
        base = vals["direct"]
        for t in ("devpi_tx", "devpi-server"):
            ok = isinstance(base, (int, float)) and base and isinstance(vals[t], (int, float))
            cells.append(f"{vals[t] / base:.2f}x" if ok else "n/a")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def has_error(obj: Any) -> bool:
    if isinstance(obj, dict):
        return "error" in obj or any(has_error(v) for v in obj.values())
    return False


def paired_warm(which: list[str], devpi_venv: Path | None, upstream: str, nginx_work: Path, expected: set[str],
                work: Path, iterations: int, stopped: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """
    Warm installs with every target's server running at once (each filled by one install first), the
    targets taking turns install by install: a drift of the machine then hits them alike. Per tool: each
    target's median, and the median over iterations of each target's time / direct's time of the same turn.
    """
    out: dict[str, Any] = {}
    with ExitStack() as stack:
        served = {t: stack.enter_context(serving(t, devpi_venv, upstream, nginx_work, work / t.replace("-", "_"), stopped))
                  for t in which}  # fmt: skip
        for tool in ("pip", "uv"):
            for srv in served.values():
                install(tool, srv.index, work, expected)  # fills a mirror's cache
            runs: dict[str, list[float]] = {t: [] for t in which}
            for number in range(iterations):
                order = which[number % len(which) :] + which[: number % len(which)]
                for target in order:
                    runs[target].append(install(tool, served[target].index, work, expected))
            res: dict[str, Any] = {t: {"s": median(r), "runs_s": r} for t, r in runs.items()}
            if "direct" in runs:
                for target in which:
                    ratios = [a / b for a, b in zip(runs[target], runs["direct"], strict=False)]
                    res[target]["ratio_to_direct"] = round(median(ratios), 3)
            log(
                f"paired warm {tool}: "
                + ", ".join(f"{t} {r['s']} s ({r.get('ratio_to_direct')}x)" for t, r in res.items())
            )
            out[tool] = res
    return out


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else round((ordered[mid - 1] + ordered[mid]) / 2, 3)


def aggregate(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one target folded into one result: each number is the median over rounds, with its runs."""
    if not rounds:
        return {}
    out: dict[str, Any] = {}
    for key in {k for r in rounds for k in r}:
        parts = [r[key] for r in rounds if key in r]
        if all(isinstance(v, dict) for v in parts):
            out[key] = aggregate(parts)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in parts):
            out[key] = median([float(v) for v in parts])
            if len(parts) > 1:
                out[f"{key}_rounds"] = parts
        else:
            out[key] = parts[0] if len(parts) == 1 else parts
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--only", choices=["devpi", "devpi_tx", "direct"])
    p.add_argument("--names", type=int, default=500_000, help="entries in the upstream root list")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each starts fresh servers (medians are reported)")
    p.add_argument("--repeat", type=int, default=1, help="warm installs per tool and round (best is kept)")
    default_venvs = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    p.add_argument("--venv-dir", default=default_venvs, help=f"where install venvs go [{default_venvs}]")
    p.add_argument("--paired", type=int, default=5, help="turns of the paired warm comparison (0: skip it)")
    args = p.parse_args()
    only = {"devpi": "devpi-server"}.get(args.only or "", args.only)
    which = [t for t in TARGETS if only is None or t == only]

    nginx = ensure_nginx()
    devpi_venv = ensure_devpi_venv() if "devpi-server" in which else None
    wheels = ensure_wheelhouse()
    real = build_upstream(wheels, args.names)
    n_names = max(args.names, len(real))
    log(f"upstream: {len(wheels)} wheels, {len(real)} projects, {n_names} names in the root list")

    per_round: dict[str, list[dict[str, Any]]] = {t: [] for t in which}
    paired: dict[str, Any] = {}
    stopped: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mirror-nginx-") as tmp, \
            tempfile.TemporaryDirectory(prefix="mirror-venvs-", dir=args.venv_dir) as venvs:  # fmt: skip
        VENV_ROOT[:] = [Path(venvs)]
        nginx_work = Path(tmp)
        proc, upstream = start_nginx(nginx, nginx_work)
        log(f"nginx (pid {proc.pid}) serves {UPSTREAM} at {upstream}; install venvs in {venvs}")
        try:
            for number in range(args.rounds):
                # the order turns every round, so a drift of the machine hits every target alike
                turn = which[number % len(which) :] + which[: number % len(which)]
                log(f"round {number + 1}/{args.rounds}: {', '.join(turn)}")
                for target in turn:
                    per_round[target].append(bench_target(target, devpi_venv, upstream, nginx_work, set(real),
                                                          n_names, args.repeat, stopped))  # fmt: skip
            if args.paired:
                with tempfile.TemporaryDirectory(prefix="mirror-paired-") as paired_tmp:
                    for target in which:
                        (Path(paired_tmp) / target.replace("-", "_")).mkdir()
                    paired = paired_warm(which, devpi_venv, upstream, nginx_work, set(real), Path(paired_tmp),
                                         args.paired, stopped)  # fmt: skip
        finally:
            stop(proc)
            left = survivors(proc.pid)
            stopped.append({"target": "nginx", "pid": proc.pid, "exit": proc.returncode, "survivors": left})
            upstream_requests = count_lines(nginx_work / "access.log")
    orphans = [s for s in stopped if s["survivors"]]
    log("all processes stopped" if not orphans else f"processes left behind: {orphans}")
    results = {t: aggregate(r) for t, r in per_round.items()}

    print(table(results))
    if paired:
        print("\n| paired warm (median of turns) | " + " | ".join(which) + " |")
        print("|---|" + "---:|" * len(which))
        for tool, res in paired.items():
            cells = [f"{res[t]['s']:.3f} s" + (f" ({res[t]['ratio_to_direct']:.2f}x)" if "ratio_to_direct" in res[t] else "")
                     for t in which]  # fmt: skip
            print(f"| {tool} | " + " | ".join(cells) + " |")
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS_DIR / f"mirror-{stamp}.json"
    nginx_version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    meta = {"timestamp": stamp, "names": args.names, "rounds": args.rounds, "repeat": args.repeat,
            "root_warm_runs": ROOT_WARM_RUNS, "venv_dir": args.venv_dir, "paired": args.paired,
            "packages": PACKAGES, "wheels": [w.name for w in wheels], "projects": real,
            "devpi_server_version": DEVPI_VERSION, "nginx": nginx_version, "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "upstream_requests_total": upstream_requests, "processes": stopped}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "results": results, "rounds": per_round, "paired_warm": paired},
                              indent=2) + "\n")  # fmt: skip
    print(f"\nresults written to {out.relative_to(REPO_ROOT)}")
    return 1 if orphans or any(has_error(r) for rs in per_round.values() for r in rs) else 0


if __name__ == "__main__":
    sys.exit(main())
