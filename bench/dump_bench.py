"""Dump benchmark: devpi-export/devpi-import of devpi-server 6.20.3 versus devpi_tx --export/--import.

Everything runs on 127.0.0.1; a fake upstream index stands in for PyPI. See bench/README.md.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_bench import (
    DEVPI_VERSION,
    JSON_ACCEPT,
    REPO_ROOT,
    RESULTS_DIR,
    TWISTD,
    UPLOAD_BATCH,
    UpstreamHandler,
    ensure_devpi_venv,
    ensure_wheels,
    free_port,
    log,
    setup_alice_dev,
    spawn_server,
    stop,
    tail,
    upload,
    wait_ready,
)  # fmt: skip

SERVERS = ("devpi-server", "devpi_tx")
OPS = ("export", "import")
RUN_TIMEOUT = 3600.0  # seconds before a one-shot export/import is killed
QUIET_BUDGET = 600.0  # seconds, over the whole run, spent waiting for other benchmarks to finish
QUIET_POLL = 5.0
TIME = "/usr/bin/time"  # GNU time, Debian package "time"
# wrk, twistd (directly or as "python -c ... twisted.scripts.twistd ...") and devpi-server processes
BUSY_PATTERN = (r"^(\S*/)?(wrk|twistd|devpi-server)( |$)|^\S*python[0-9.]* (\S*/)?(twistd|devpi-server)( |$)"
                r"|twisted\.scripts\.twistd import run")  # fmt: skip
_quiet_deadline: float | None = None


def own_pids() -> set[int]:
    """This process and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def foreign_busy() -> list[str]:
    out = subprocess.run(["pgrep", "-a", "-f", BUSY_PATTERN], check=False, capture_output=True, text=True).stdout
    mine = own_pids()
    return [ln for ln in out.splitlines() if ln.split()[0].isdigit() and int(ln.split()[0]) not in mine]


def wait_quiet(what: str) -> list[str]:
    """Wait until no foreign wrk/twistd/devpi-server runs (10 minutes in all); return those still running."""
    global _quiet_deadline
    if _quiet_deadline is None:
        _quiet_deadline = time.monotonic() + QUIET_BUDGET
    busy = foreign_busy()
    if busy and time.monotonic() < _quiet_deadline:
        log(f"{what}: waiting for other processes to end:\n  " + "\n  ".join(busy))
        while busy and time.monotonic() < _quiet_deadline:
            time.sleep(QUIET_POLL)
            busy = foreign_busy()
    if busy:
        log(f"{what}: timing while these still run:\n  " + "\n  ".join(busy))
    return busy


def tool_env() -> dict[str, str]:
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=pythonpath)


# devpi_tx runs its dump actions through "scripts" (devpi-tx-export/-import,
# the counterparts of devpi-export/-import) or "twistd" (twistd devpi --export)
DEVPI_TX_TOOL = {"name": "scripts"}
REPEAT = {"n": 3}  # runs of each export and import; the median is reported


def dump_cmd(server: str, venv: Path | None, op: str, sdir: Path, dump: Path) -> list[str]:
    if server == "devpi_tx" and DEVPI_TX_TOOL["name"] == "scripts":
        script = Path(sys.executable).parent / f"devpi-tx-{op}"
        return [str(script), "--serverdir", str(sdir), str(dump)]
    if server == "devpi_tx":
        return [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "devpi", "--serverdir", str(sdir),
                f"--{op}", str(dump)]  # fmt: skip
    assert venv is not None
    extra = ["--no-events"] if op == "import" else []
    return [str(venv / "bin" / f"devpi-{op}"), "--serverdir", str(sdir), *extra, str(dump)]


def ensure_time() -> None:
    if Path(TIME).exists():
        return
    if os.geteuid() != 0:
        raise SystemExit(f"{TIME} not found: install it (apt-get install -y time)")
    log("installing time with apt-get")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "time"]):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def run_measured(cmd: list[str], logfile: Path, cwd: Path) -> dict[str, Any]:
    """
    Run cmd to the end under GNU time; wall time, peak RSS and exit status. Not ru_maxrss of a direct child:
    that carries over the RSS of the forking parent (this script), GNU time forks from a small process.
    """
    rssfile = logfile.with_suffix(".maxrss")
    with logfile.open("wb") as logf:
        t0 = time.monotonic()
        proc = subprocess.Popen([TIME, "-f", "%M", "-o", str(rssfile), *cmd], cwd=cwd, env=tool_env(), stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    # a blocking wait: Popen.wait(timeout) polls with sleeps of up to 50 ms, which would be timed too
    timer = threading.Timer(RUN_TIMEOUT, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        proc.wait()
        wall = time.monotonic() - t0
    finally:  # timeout, or SIGTERM/SIGINT of this script
        timer.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    rc = proc.returncode
    lines = rssfile.read_text().split() if rssfile.exists() else []
    rss = round(int(lines[-1]) / 1024, 1) if lines and lines[-1].isdigit() else None
    return {"s": round(wall, 3), "peak_rss_mb": rss, "rc": rc}


def serve_existing(server: str, venv: Path | None, sdir: Path, logfile: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start a server on an existing (imported) server dir, without devpi-init."""
    port = free_port()
    common = ["--serverdir", str(sdir), "--host", "127.0.0.1", "--port", str(port)]
    if server == "devpi_tx":
        cmd = [sys.executable, "-c", TWISTD, "-n", "--pidfile=", "devpi", *common]
    else:
        assert venv is not None
        cmd = [str(venv / "bin" / "devpi-server"), *common]
    with logfile.open("wb") as logf:
        proc = subprocess.Popen(cmd, cwd=sdir.parent, env=tool_env(), stdout=logf, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    return proc, f"http://127.0.0.1:{port}"


def count_files(base: str, project: str) -> int:
    url = f"{base}/alice/dev/+simple/{project}/"
    r = requests.get(url, headers={"Accept": JSON_ACCEPT}, timeout=60)
    if r.status_code != 200:
        raise RuntimeError(f"GET {url} -> {r.status_code}: {r.text[:300]}")
    return len(r.json()["files"])


def check_imported(server: str, venv: Path | None, sdir: Path, project: str, expected: int) -> int:
    logfile = sdir.parent / f"{sdir.name}-serve.log"
    proc, base = serve_existing(server, venv, sdir, logfile)
    try:
        wait_ready(proc, base)
        n = count_files(base, project)
    except Exception as exc:
        raise RuntimeError(f"{exc}\nserver log tail:\n{tail(logfile)}") from exc
    finally:
        stop(proc)
    if n != expected:
        raise RuntimeError(f"{project}: {n} files listed, expected {expected}")
    return n


def populate(server: str, venv: Path | None, upstream: str, files: list[Path], work: Path) -> float:
    """Fresh server in work/server with alice/dev holding files; stopped again afterwards. Returns uploads/s."""
    proc, base, _ = spawn_server(venv, work)
    try:
        wait_ready(proc, base)
        setup_alice_dev(base, upstream)
        return upload(base, files, work)
    except Exception as exc:
        raise RuntimeError(f"populate: {exc}\nserver log tail:\n{tail(work / 'server.log')}") from exc
    finally:
        stop(proc)


def dir_size(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def bench_dataset(server: str, venv: Path | None, upstream: str, wheels: dict[str, list[Path]],
                  work: Path, check: str) -> dict[str, Any]:  # fmt: skip
    """Populate, export, import and check one server; work/dump and work/imported are kept for cross-imports."""
    res: dict[str, Any] = {}
    files = [p for ps in wheels.values() for p in ps]
    log(f"{server}: uploading {len(files)} files")
    try:
        res["uploads_per_s"] = round(populate(server, venv, upstream, files, work), 2)
    except Exception as exc:
        res["error"] = str(exc)
        return res
    log(f"{server}: {res['uploads_per_s']} uploads/s")
    sources = {"export": work / "server", "import": work / "imported"}
    targets = {"export": work / "dump", "import": work / "imported"}
    for op in OPS:
        runs = []
        for number in range(REPEAT["n"]):
            if number:
                shutil.rmtree(targets[op])
                os.sync()  # the removal's write-back is not charged to the next run
            res[f"{op}_concurrent"] = wait_quiet(f"{server} {op}")
            logfile = work / f"{op}.log"
            cmd = dump_cmd(server, venv, op, sources[op], work / "dump")
            out = run_measured(cmd, logfile, work)
            log(f"{server}: {op} {out['s']} s, peak RSS {out['peak_rss_mb']} MB, exit {out['rc']}")
            if out["rc"] != 0:
                res[op] = out
                res["error"] = f"{op} exited with {out['rc']}: {' '.join(cmd)}\noutput tail:\n{tail(logfile, 40)}"
                log(f"{server}: {res['error']}")
                return res
            runs.append(out)
        # the median run's time; the peak RSS of all runs
        res[op] = dict(sorted(runs, key=lambda r: r["s"])[len(runs) // 2], runs_s=[r["s"] for r in runs],
                       peak_rss_mb=max((r["peak_rss_mb"] or 0.0) for r in runs) or None)  # fmt: skip
        if op == "export":
            res["dump_files"], res["dump_bytes"] = dir_size(work / "dump")
    try:
        res["check_files"] = check_imported(server, venv, work / "imported", check, len(wheels[check]))
        log(f"{server}: imported server lists {res['check_files']} files for {check}")
    except Exception as exc:
        res["error"] = f"check of the imported server: {exc}"
        log(f"{server}: {res['error']}")
    return res


def cross_import(importer: str, venv: Path | None, dump: Path, work: Path, check: str, expected: int) -> dict[str, Any]:
    """Untimed: importer imports the other server's dump; success means exit 0 and the expected page."""
    target, logfile = work / f"cross-{importer}", work / f"cross-{importer}.log"
    out = run_measured(dump_cmd(importer, venv, "import", target, dump), logfile, work)
    if out["rc"] != 0:
        return {"ok": False, "error": f"exit {out['rc']}:\n{tail(logfile, 40)}"}
    try:
        return {"ok": True, "files": check_imported(importer, venv, target, check, expected)}
    except Exception as exc:
        return {"ok": False, "error": f"import exited 0, check failed: {exc}"}


def cell(res: dict[str, Any], op: str, key: str) -> str:
    if op not in res:
        return "FAILED" if "error" in res else "-"
    value = res[op][key]
    return "FAILED" if res[op]["rc"] != 0 else "n/a" if value is None else f"{value:,.{2 if key == 's' else 1}f}"


def table(results: dict[str, dict[str, dict[str, Any]]], labels: dict[str, str]) -> str:
    rows = ["| dataset / operation | devpi-server s | devpi_tx s | speed-up (devpi/devpi_tx) "
            "| devpi-server peak RSS MB | devpi_tx peak RSS MB |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for ds, per_server in results.items():
        a, b = (per_server.get(s, {}) for s in SERVERS)
        for op in OPS:
            ok = all(op in r and r[op]["rc"] == 0 for r in (a, b))
            speed = f"{a[op]['s'] / b[op]['s']:.2f}x" if ok and b[op]["s"] else "n/a"
            rows.append(f"| {op} {labels[ds]} | {cell(a, op, 's')} | {cell(b, op, 's')} | {speed} "
                        f"| {cell(a, op, 'peak_rss_mb')} | {cell(b, op, 'peak_rss_mb')} |")  # fmt: skip
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--projects", type=int, default=200, help="dataset A: projects")
    p.add_argument("--versions", type=int, default=5, help="dataset A: versions per project")
    p.add_argument("--single-versions", type=int, default=2000, help="dataset B: versions of one project")
    p.add_argument("--only", choices=["devpi", "devpi_tx"])
    p.add_argument("--repeat", type=int, default=3, help="runs of each export and import (median reported)")
    p.add_argument("--work-dir", default=None,
                   help="where server dirs and dumps go (default: the system's temp dir); /dev/shm takes the disk out")  # fmt: skip
    p.add_argument("--devpi-tx-tool", choices=["scripts", "twistd"], default="scripts",
                   help="devpi-tx-export/-import (default) or twistd devpi --export/--import")  # fmt: skip
    args = p.parse_args()
    DEVPI_TX_TOOL["name"] = args.devpi_tx_tool
    REPEAT["n"] = max(1, args.repeat)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers and remove the temporary dirs
    which = [s for s in SERVERS if args.only is None or s == {"devpi": "devpi-server"}.get(args.only, args.only)]

    load_start = os.getloadavg()
    ensure_time()
    devpi_venv = ensure_devpi_venv() if "devpi-server" in which else None
    datasets = {"A": ensure_wheels(args.projects, args.versions), "B": ensure_wheels(1, args.single_versions)}
    labels = {"A": f"A ({args.projects}x{args.versions})", "B": f"B (1x{args.single_versions})"}
    upstream_srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), UpstreamHandler)
    threading.Thread(target=upstream_srv.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{upstream_srv.server_address[1]}/simple/"
    log(f"fake upstream at {upstream}; load average {load_start}")
    wait_quiet("start")

    results: dict[str, dict[str, dict[str, Any]]] = {}
    cross: dict[str, dict[str, Any]] = {}
    for ds, wheels in datasets.items():
        names = list(wheels)
        check = names[len(names) // 2]
        results[ds] = {}
        with tempfile.TemporaryDirectory(prefix=f"bench-dump-{ds}-", dir=args.work_dir) as tmp:
            works = {s: Path(tmp) / s.replace("-", "_") for s in which}
            for server in which:
                works[server].mkdir()
                log(f"dataset {labels[ds]}: {server}")
                venv = devpi_venv if server == "devpi-server" else None
                results[ds][server] = bench_dataset(server, venv, upstream, wheels, works[server], check)
            if len(which) == 2:
                cross[ds] = {}
                for importer, exporter in zip(SERVERS, reversed(SERVERS), strict=False):
                    dump = works[exporter] / "dump" / "dataindex.json"
                    key = f"{importer} imports {exporter} dump"
                    if not dump.exists():
                        cross[ds][key] = {"ok": False, "error": f"no dump from {exporter}"}
                        continue
                    venv = devpi_venv if importer == "devpi-server" else None
                    cross[ds][key] = cross_import(importer, venv, dump.parent, works[importer], check,
                                                  len(wheels[check]))  # fmt: skip
                    log(f"dataset {labels[ds]}: {key}: {'ok' if cross[ds][key]['ok'] else 'FAILED'}")
    upstream_srv.shutdown()
    load_end = os.getloadavg()

    print(table(results, labels))
    print()
    for ds, per_server in results.items():
        for server, res in per_server.items():
            state = f"{res['check_files']} files listed, as expected" if "check_files" in res else "FAILED"
            print(f"- {labels[ds]} {server}: imported server check: {state}")
            if "error" in res:
                print("  error: " + res["error"].replace("\n", "\n    "))
        for key, out in cross.get(ds, {}).items():
            print(f"- {labels[ds]} {key}: {'ok' if out['ok'] else 'FAILED'}")
            if not out["ok"]:
                print("  error: " + out["error"].replace("\n", "\n    "))
    print(f"\nload average (1, 5, 15 min): start {load_start}, end {load_end}")
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_path = RESULTS_DIR / f"dump-{stamp}.json"
    meta = {"timestamp": stamp, "projects": args.projects, "versions": args.versions,
            "single_versions": args.single_versions, "upload_batch": UPLOAD_BATCH,
            "devpi_server_version": DEVPI_VERSION, "python": sys.version.split()[0], "cpus": os.cpu_count(),
            "loadavg_start": load_start, "loadavg_end": load_end, "work_dir": args.work_dir, "repeat": args.repeat,
            "upstream_requests": UpstreamHandler.hits}  # fmt: skip
    out_path.write_text(json.dumps({"meta": meta, "results": results, "cross_import": cross}, indent=2) + "\n")
    print(f"results written to {out_path.relative_to(REPO_ROOT)}")
    failed = any("error" in r for per in results.values() for r in per.values())
    return 1 if failed or any(not o["ok"] for c in cross.values() for o in c.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
