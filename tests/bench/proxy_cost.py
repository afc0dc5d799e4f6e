#!/usr/bin/python3
"""proxy_cost: what one request costs each proxy, counted rather than timed.

    /usr/bin/python3 tests/bench/proxy_cost.py --build-dir build/release [--duration 5] [--mallocs] [--rate 2000]

Starts the same five paths as proxy_bench.py (its process set-up and configs are reused) and, for
keep-alive and Connection: close, runs wrk against (b)..(e) under `perf stat -p PID`, once for the
proxy's process and once for the backend's process behind it (hello-sdk for (b), the sidecar for
(c), hello --listen for (d) and (e)). It prints, per request: CPU microseconds (task-clock),
syscalls and context switches, and with --mallocs also malloc() calls (a uprobe on libc's malloc,
added and removed here; slows the process down while it counts, so it is a separate wrk run).

Why: on a shared 2-core machine req/s swings by 30% from minute to minute, while CPU per request
and syscalls per request barely move, and they say where the time goes. On 2 cores the proxies'
req/s is roughly 2 cores / (wrk + proxy + backend CPU per request), so (b) beats (d) by 1.2x only
when master + hello-sdk cost about 1/1.2 of nginx + hello --listen, wrk's share aside.
Needs perf (linux-perf) and root (or perf_event_paranoid <= 0) for the tracepoint and the uprobe.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import proxy_bench as pb  # noqa: E402

LIBC_CANDIDATES = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6",
                   "/lib/aarch64-linux-gnu/libc.so.6"]


def perf_stat(pid, events, load_argv):
    """Counts `events` on `pid` for exactly one run of the load generator (wrk, or open_loop_latency
    for --rate); returns (requests, {event: count})."""
    p = subprocess.run(["perf", "stat", "-x,", "-e", ",".join(events), "-p", str(pid), "--"] + load_argv,
                       capture_output=True, text=True, timeout=600)
    m = re.search(r"(\d+) requests in", p.stdout) or re.search(r'"requests": (\d+)', p.stdout)
    if not m:
        raise pb.BenchError(f"{load_argv[0]} under perf stat failed: {p.stderr.strip()[-400:]}")
    counts = {}
    for line in p.stderr.splitlines():
        f = line.split(",")
        if len(f) > 3 and f[0] and f[0][0].isdigit():
            counts[f[2]] = float(f[0])
    return int(m.group(1)), counts


def main(argv):
    ap = argparse.ArgumentParser(description="per-request CPU, syscalls and context switches of each proxy")
    ap.add_argument("--build-dir", default="build/release")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    ap.add_argument("--mallocs", action="store_true", help="also count malloc() calls per request (uprobe)")
    ap.add_argument("--rate", type=int, default=0,
                    help="also measure at this fixed rate (open_loop_latency, 50 connections), where nothing is "
                         "batched: what one request costs on the latency test's path")
    args = ap.parse_args(argv)
    if not shutil.which("perf"):
        print("proxy_cost: perf is missing (apt-get install linux-perf)", file=sys.stderr)
        return 1
    build = os.path.abspath(args.build_dir)
    bins = {
        "socketmaster": os.path.join(build, "server", "socketmaster"),
        "hello": os.path.join(build, "examples", "hello"),
        "socketmaster-connect": os.path.join(build, "client-sdk", "socketmaster-connect"),
        "nginx": shutil.which("nginx") or "/usr/sbin/nginx",
        "haproxy": shutil.which("haproxy") or "/usr/sbin/haproxy",
        "open_loop_latency": os.path.join(build, "tests", "bench", "open_loop_latency"),
    }
    for sig in (pb.signal.SIGTERM, pb.signal.SIGHUP, pb.signal.SIGINT):
        pb.signal.signal(sig, pb.on_signal)
    workdir = tempfile.mkdtemp(prefix="proxy_cost.")
    procs = pb.processes(workdir)
    probe = None
    try:
        urls = pb.start_paths(procs, bins, workdir)
        pid = {name: p.pid for name, p, _ in procs.children}
        roles = {"b": [("master", "master"), ("hello-sdk", "hello-sdk")],
                 "c": [("master", "master"), ("sidecar", "connect")],
                 "d": [("nginx", "nginx"), ("hello", "hello-direct")],
                 "e": [("haproxy", "haproxy"), ("hello", "hello-direct")],
                 "f": [("master", "master"), ("hello-sdk", "hello-sdk-tcp")]}
        events = ["task-clock", "context-switches", "raw_syscalls:sys_enter"]
        if args.mallocs:
            libc = next((p for p in LIBC_CANDIDATES if os.path.exists(p)), None)
            r = subprocess.run(["perf", "probe", "-x", libc or "libc.so.6", "--add", "proxy_cost_malloc=malloc"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise pb.BenchError("cannot add the malloc uprobe: " + r.stderr.strip()[-300:])
            probe = re.search(r"(probe_libc:proxy_cost_malloc\w*)", r.stdout + r.stderr)
            probe = probe.group(1) if probe else "probe_libc:proxy_cost_malloc"
        print(f"{'mode':10} {'path':26} {'process':10} {'req/s':>8} {'CPU us/req':>11} {'syscalls/req':>13} "
              f"{'ctx-sw/req':>11}" + (f" {'mallocs/req':>12}" if probe else ""), flush=True)
        modes = ["keep-alive", "close"] + ([f"{args.rate}/s"] if args.rate else [])
        for mode in modes:
            header = ["-H", "Connection: close"] if mode == "close" else []
            for key, _, label in pb.PATHS[1:]:
                url = f"http://{urls[key]}/"
                pb.run_tool(["wrk", "-t1", "-c50", "-d1s", *header, url], timeout=60)  # warm-up
                for role, name in roles[key]:
                    if mode.endswith("/s"):
                        load = [bins["open_loop_latency"], "--target", urls[key], "--rate", str(args.rate),
                                "--connections", "50", "--duration", str(args.duration), "--warmup", "0"]
                    else:
                        load = ["wrk", "-t1", "-c50", f"-d{args.duration}s", *header, url]
                    n, c = perf_stat(pid[name], events, load)
                    line = (f"{mode:10} {'(' + key + ') ' + label:26} {role:10} {n / args.duration:8.0f} "
                            f"{1000 * c.get('task-clock', 0) / n:11.1f} {c.get('raw_syscalls:sys_enter', 0) / n:13.2f} "
                            f"{c.get('context-switches', 0) / n:11.2f}")
                    if probe:
                        n2, c2 = perf_stat(pid[name], [probe], load)
                        line += f" {c2.get(probe, 0) / n2:12.1f}"
                    print(line, flush=True)
        return 0
    except pb.BenchError as e:
        print(f"proxy_cost: {e}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if probe:
            subprocess.run(["perf", "probe", "-d", probe], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
