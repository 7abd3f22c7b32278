"""Workers benchmark: devpi_tx with --workers 0/1/2 versus devpi-server 6.20.3 (simple pages, uploads under reads).

Everything runs on 127.0.0.1; a fake upstream index stands in for PyPI. See bench/README.md.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core_bench import (
    DEVPI_VERSION,
    JSON_ACCEPT,
    REPO_ROOT,
    RESULTS_DIR,
    UPLOAD_BATCH,
    WRK_CONNECTIONS,
    WRK_THREADS,
    UpstreamHandler,
    ensure_devpi_venv,
    ensure_wheels,
    ensure_wrk,
    log,
    run_wrk,
    setup_alice_dev,
    spawn_server,
    stop,
    tail,
    tree_rss_kb,
    upload,
    verify_simple,
    wait_ready,
)  # fmt: skip

READ_PROJECTS, READ_VERSIONS = 100, 3  # bench-pkg-0001..0100, 1.0.0..1.0.2: the pages wrk reads
UPLOAD_FILES = 100  # per upload phase: bench-pkg-0101..0200; versions 1.0.0, 1.0.1, ... one per phase and round
WRK_LONG = 3600  # wrk duration while uploads run; it is stopped with SIGINT when they are done
PROBLEM = re.compile(r"Traceback|Unhandled|ERROR|CRITICAL|locked|Worker \d+ ended|\] [A-Z]+ \S+ 5\d\d ")
COLUMNS = ["simple req/s", "p99 ms", "ratio vs devpi-server", "uploads/s alone", "uploads/s under reads",
           "req/s during uploads", "uploads/s under paced reads", "paced req/s"]  # fmt: skip
MS_COLUMNS = ["wall (1 / uploads/s)", "twine CPU", "server (median / p90)"]
PACE = {"rps": 2000.0}  # the paced read load during the last upload phase


def tree_pids(root: int) -> list[int]:
    """root and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def cpu_s(pids: list[int]) -> dict[int, float]:
    """user + system CPU seconds of each process."""
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def listeners(port: int) -> int:
    """Listening TCP sockets on 127.0.0.1:port (one per process of the tree with SO_REUSEPORT)."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        return sum(1 for ln in f if (p := ln.split())[1] == want and p[3] == "0A")


def wait_listeners(proc: subprocess.Popen[bytes], port: int, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while listeners(port) < count:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{listeners(port)} of {count} listening sockets on port {port}")
        time.sleep(0.05)


def problems(logfile: Path, start: int = 0) -> list[str]:
    with logfile.open("rb") as f:
        f.seek(start)
        lines = [ln for ln in f.read().decode(errors="replace").splitlines() if PROBLEM.search(ln)]
    return lines if len(lines) <= 40 else [*lines[:30], f"... {len(lines) - 40} more ...", *lines[-10:]]


UPLOAD_LINE = re.compile(r"\] POST /alice/dev/ 200 \d+ ([\d.]+)ms$", re.M)


def upload_ms(logfile: Path, start: int) -> list[float]:
    """Server-side times (ms) of the uploads logged by devpi_tx after byte C{start} of its log."""
    with logfile.open("rb") as f:
        f.seek(start)
        return [float(m) for m in UPLOAD_LINE.findall(f.read().decode("utf-8", "replace"))]


def check_pages(base: str, wheels: dict[str, list[Path]], rounds: int) -> None:
    """verify_simple (JSON) several times: each request is a new connection, so it may reach any process."""
    for _ in range(rounds):
        verify_simple(base, wheels, JSON_ACCEPT)


def find_wrk() -> int | None:
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        try:
            ppid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            if ppid == me and (entry / "comm").read_text().strip() == "wrk":
                return int(entry.name)
        except (OSError, IndexError):
            continue
    return None


def timed_upload(base: str, files: list[Path], work: Path) -> tuple[float, float]:
    """L{upload}: uploads/s, and the CPU seconds the twine runs used per file."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    rate = upload(base, files, work)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return rate, cpu / len(files)


def uploads_under_reads(base: str, files: list[Path], names: list[str], work: Path,
                        pace_rps: float | None = None) -> tuple[float, float, dict[str, Any]]:  # fmt: skip
    """
    wrk (JSON simple pages, as fast as it goes or paced at about pace_rps) runs in a thread
    from before the first upload until after the last one.
    """
    out: dict[str, Any] = {}

    def reader() -> None:
        try:
            out["wrk"] = run_wrk(base, names, JSON_ACCEPT, WRK_LONG, work, pace_rps)
        except Exception as exc:
            out["error"] = str(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    deadline, pid = time.monotonic() + 10, None
    while pid is None and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
        pid = find_wrk()
    if pid is None:
        thread.join()
        raise RuntimeError(f"wrk did not start: {out.get('error')}")
    time.sleep(0.5)  # let wrk open its connections
    try:
        rate, twine_cpu = timed_upload(base, files, work)  # wrk, a child too, is reaped (and counted) only later
    finally:
        os.kill(pid, signal.SIGINT)  # wrk stops, prints its summary and runs done()
        thread.join()
    if "error" in out:
        raise RuntimeError(out["error"])
    return rate, twine_cpu, out["wrk"]


def shutdown(proc: subprocess.Popen[bytes], pids: list[int]) -> dict[str, Any]:
    """SIGTERM to the main process only (it stops its workers); then check that the whole tree is gone."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            log(f"pid {proc.pid} ignored SIGTERM for 15 s")
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [p for p in pids if alive(p)]
    if left or proc.poll() is None:
        log(f"processes left after SIGTERM: {left}; killing the group")
        stop(proc)
    return {"pids": pids, "exit": proc.returncode, "survivors": left}


PHASES = ("alone", "under_reads", "under_paced_reads")


def upload_phases(name: str, base: str, work: Path, logfile: Path, read: dict[str, list[Path]],
                  batches: list[dict[str, list[Path]]], procs: int) -> dict[str, Any]:  # fmt: skip
    """
    The upload phases, in rounds: alone, under reads, under paced reads, then
    again with the next batches, so that drift of the machine touches every
    phase alike.  Rates are medians over the rounds; server times (devpi_tx)
    are pooled over the rounds.
    """
    rates: dict[str, list[float]] = {phase: [] for phase in PHASES}
    twine_cpu: dict[str, list[float]] = {phase: [] for phase in PHASES}
    times: dict[str, list[float]] = {phase: [] for phase in PHASES}
    wrks: dict[str, list[dict[str, Any]]] = {phase: [] for phase in PHASES[1:]}
    for r in range(0, len(batches), len(PHASES)):
        for phase, batch in zip(PHASES, batches[r : r + len(PHASES)], strict=False):
            files = [p for ps in batch.values() for p in ps]
            mark = logfile.stat().st_size
            if phase == "alone":
                rate, cpu = timed_upload(base, files, work)
                log(f"{name}: {rate:.2f} uploads/s alone")
            else:
                pace = PACE["rps"] if phase == "under_paced_reads" else None
                rate, cpu, out = uploads_under_reads(base, files, list(read), work, pace)
                wrks[phase].append(out)
                log(f"{name}: {rate:.2f} uploads/s {phase.replace('_', ' ')} at {out['rps']} req/s "
                    f"(p99 {out['p99_ms']} ms, non-2xx {out['non2xx']}, socket errors {out['socket_errors']})")  # fmt: skip
            rates[phase].append(rate)
            twine_cpu[phase].append(cpu * 1000)
            times[phase] += upload_ms(logfile, mark)
            check_pages(base, batch, 2 * procs)
    res: dict[str, Any] = {"upload_rounds": rates, "twine_cpu_ms_rounds": twine_cpu}
    for phase in PHASES:
        res[f"uploads_{phase}"] = round(statistics.median(rates[phase]), 2)
        res[f"upload_wall_ms_{phase}"] = round(1000 / res[f"uploads_{phase}"], 2)
        res[f"twine_cpu_ms_{phase}"] = round(statistics.median(twine_cpu[phase]), 2)
        found = sorted(times[phase])
        if found:
            res[f"upload_ms_{phase}"] = {"n": len(found), "median": found[len(found) // 2],
                                         "p90": found[int(len(found) * 0.9)]}  # fmt: skip
    res["reads_during_uploads_wrk"] = wrks["under_reads"]
    res["reads_during_uploads_rps"] = round(statistics.median(w["rps"] for w in wrks["under_reads"]), 1)
    res["paced_reads_wrk"] = wrks["under_paced_reads"]
    res["paced_reads_rps"] = round(statistics.median(w["rps"] for w in wrks["under_paced_reads"]), 1)
    return res


def bench_config(name: str, workers: int | None, devpi_venv: Path | None, upstream: str,
                 read: dict[str, list[Path]], batches: list[dict[str, list[Path]]] | None,
                 duration: int) -> dict[str, Any]:  # fmt: skip
    res: dict[str, Any] = {"workers": workers}
    procs = 1 + (workers or 0)
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        work = Path(tmp)
        logfile = work / "server.log"
        extra = ("--workers", str(workers)) if workers is not None else ()
        proc, base, _ = spawn_server(devpi_venv, work, extra)
        pids = [proc.pid]
        try:
            wait_ready(proc, base)
            wait_listeners(proc, int(base.rsplit(":", 1)[1]), procs)
            pids = tree_pids(proc.pid)
            res["pids"] = pids
            log(f"{name}: up on {base}, processes {pids}")
            setup_alice_dev(base, upstream)
            files = [p for ps in read.values() for p in ps]
            res["setup_uploads_per_s"] = round(upload(base, files, work), 2)
            log(f"{name}: {len(files)} files uploaded ({res['setup_uploads_per_s']}/s)")

            check_pages(base, read, 2 * procs)
            cpu0 = cpu_s(pids)
            out = run_wrk(base, list(read), JSON_ACCEPT, duration, work)
            cpu = {pid: round(t - cpu0.get(pid, 0.0), 2) for pid, t in cpu_s(pids).items()}
            res.update(simple_wrk=out, simple_rps=out["rps"], simple_p99_ms=out["p99_ms"], simple_cpu_s=cpu)
            log(f"{name}: {out['rps']} req/s, p99 {out['p99_ms']} ms, non-2xx {out['non2xx']}, "
                f"socket errors {out['socket_errors']}, timeouts {out['timeouts']}, CPU s per process {cpu}")  # fmt: skip

            if batches is not None:
                res.update(upload_phases(name, base, work, logfile, read, batches, procs))
            res["rss_mb"] = round(tree_rss_kb(proc.pid) / 1024, 1)
            res["pids_after"] = tree_pids(proc.pid)
            if res["pids_after"] != pids:
                log(f"{name}: process tree changed from {pids} to {res['pids_after']}")
        except Exception as exc:
            log(f"{name}: FAILED: {exc}\nserver log tail:\n{tail(logfile)}")
            res["error"] = str(exc)
        finally:
            try:
                pids = sorted(set(pids) | set(res.get("pids_after", [])) | set(tree_pids(proc.pid)))
            except OSError:  # keep the known pids; stopping matters more
                pass
            res["shutdown"] = shutdown(proc, pids)
            res["log_problems"] = problems(logfile)
            res["log_shutdowns"] = logfile.read_text(errors="replace").count("Server Shut Down.")
    for key in ("simple_wrk", "reads_during_uploads_wrk", "paced_reads_wrk"):
        runs = res.get(key, [])
        for run in runs if isinstance(runs, list) else [runs]:
            bad = {k: run[k] for k in ("non2xx", "socket_errors", "timeouts") if run[k]}
            if bad:
                res.setdefault("failures", []).append(f"{key}: {bad}")
    if res["shutdown"]["survivors"] or res["shutdown"]["exit"] not in (0, -signal.SIGTERM):
        res.setdefault("failures", []).append(f"shutdown: {res['shutdown']}")
    if workers is not None and res["log_shutdowns"] != procs:
        res.setdefault("failures", []).append(f"{res['log_shutdowns']} of {procs} processes logged shutdown")
    if res["log_problems"]:
        res.setdefault("failures", []).append(f"{len(res['log_problems'])} problem lines in the server log")
    for line in res.get("failures", []):
        log(f"{name}: PROBLEM: {line}")
    for line in res["log_problems"]:
        log(f"{name}: log: {line}")
    return res


def fmt(v: Any) -> str:
    return "-" if v is None else f"{v:,.2f}" if isinstance(v, float) else f"{v:,}"


def table(results: dict[str, dict[str, Any]]) -> str:
    ref = results.get("devpi-server", {}).get("simple_rps")
    rows = ["| configuration | " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * len(COLUMNS)]
    for name, r in results.items():
        rps = r.get("simple_rps")
        ratio = f"{rps / ref:.2f}x" if rps and ref else "n/a"
        vals = [fmt(rps), fmt(r.get("simple_p99_ms")), ratio, fmt(r.get("uploads_alone")),
                fmt(r.get("uploads_under_reads")), fmt(r.get("reads_during_uploads_rps")),
                fmt(r.get("uploads_under_paced_reads")), fmt(r.get("paced_reads_rps"))]  # fmt: skip
        rows.append(f"| {name}{' (FAILED)' if 'error' in r else ''} | " + " | ".join(vals) + " |")
    timed = {name: r for name, r in results.items() if "uploads_alone" in r}
    if timed:
        rows += [
            "",
            "| ms per upload | phase | " + " | ".join(MS_COLUMNS) + " |",
            "|---|---|" + "---:|" * len(MS_COLUMNS),
        ]
        for name, r in timed.items():
            for phase in PHASES:
                server = r.get(f"upload_ms_{phase}")
                cells = [fmt(r.get(f"upload_wall_ms_{phase}")), fmt(r.get(f"twine_cpu_ms_{phase}")),
                         f"{server['median']:.1f} / {server['p90']:.1f}" if server else "-"]  # fmt: skip
                rows.append(f"| {name} | {phase.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def git_state() -> dict[str, Any]:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO_ROOT, capture_output=True, text=True, check=False).stdout

    dirty = git("status", "--porcelain", "--untracked-files=no").splitlines()
    return {"commit": git("rev-parse", "HEAD").strip(), "dirty": dirty}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=10, help="seconds per simple-page wrk run")
    p.add_argument("--only", choices=["devpi", "devpi_tx"])
    p.add_argument("--workers-list", default="0,1,2", help="devpi_tx --workers values for the simple-page runs")
    p.add_argument("--upload-workers", default="0,2", help="of those, the ones that also run the upload phases")
    p.add_argument("--paced-rps", type=float, default=PACE["rps"],
                   help="read load (req/s, all connections together) during the last upload phase")  # fmt: skip
    p.add_argument("--upload-rounds", type=int, default=3,
                   help="rounds of the three upload phases (alone, under reads, under paced reads)")  # fmt: skip
    args = p.parse_args()
    workers_list = [int(w) for w in args.workers_list.split(",") if w.strip()]
    upload_workers = {int(w) for w in args.upload_workers.split(",") if w.strip()}

    load_start = os.getloadavg()
    ensure_wrk()
    devpi_venv = ensure_devpi_venv() if args.only != "devpi_tx" else None
    wheels = ensure_wheels(READ_PROJECTS, READ_VERSIONS)
    read = {n: wheels[n] for n in list(wheels)[:READ_PROJECTS]}
    phases = len(PHASES) * args.upload_rounds
    uploads = ensure_wheels(READ_PROJECTS + UPLOAD_FILES, phases)
    batches = [{n: [uploads[n][v]] for n in list(uploads)[READ_PROJECTS:]} for v in range(phases)]
    PACE["rps"] = args.paced_rps
    upstream_srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), UpstreamHandler)
    threading.Thread(target=upstream_srv.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{upstream_srv.server_address[1]}/simple/"
    log(f"fake upstream at {upstream}")

    configs: list[tuple[str, int | None]] = []
    if args.only != "devpi":
        configs += [(f"devpi_tx --workers {w}", w) for w in workers_list]
    if args.only != "devpi_tx":
        configs.append(("devpi-server", None))
    results: dict[str, dict[str, Any]] = {}
    for name, workers in configs:
        venv = devpi_venv if workers is None else None
        with_uploads = workers is None or workers in upload_workers
        results[name] = bench_config(name, workers, venv, upstream, read, batches if with_uploads else None,
                                     args.duration)  # fmt: skip
    upstream_srv.shutdown()

    print(table(results))
    failed = {n: r.get("failures", []) + ([r["error"]] if "error" in r else []) for n, r in results.items()}
    for name, msgs in failed.items():
        for msg in msgs:
            print(f"\n{name}: {msg}")
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS_DIR / f"workers-{stamp}.json"
    meta = {"timestamp": stamp, "duration_s": args.duration, "read_projects": READ_PROJECTS,
            "read_versions": READ_VERSIONS, "upload_files": UPLOAD_FILES, "upload_batch": UPLOAD_BATCH, "upload_rounds": args.upload_rounds,
            "paced_rps": PACE["rps"], "wrk_threads": WRK_THREADS, "wrk_connections": WRK_CONNECTIONS, "devpi_server_version": DEVPI_VERSION,
            "python": sys.version.split()[0], "cpus": os.cpu_count(), "upstream_requests": UpstreamHandler.hits,
            "git": git_state(), "loadavg_start": load_start, "loadavg_end": os.getloadavg()}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"\nresults written to {out.relative_to(REPO_ROOT)}")
    return 1 if any(failed.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
