#!/usr/bin/env python3
"""Creation rate: sandboxes per second sustained for --seconds (default 10) per backend.

Keeps one `hyperctl run --backend B -- true` in flight per core (or --workers), starting a new one as soon
as one ends, and counts the sandboxes that finished. Firecracker's published figure is 5 microVMs per core
per second. Backends that cannot run here are listed as skipped, with the reason.

    Benchmarks/creation_rate.py [--backends fake,process,kvm] [--seconds 10] [--workers N] [--json FILE]
"""
import argparse, os, shutil, subprocess, sys, tempfile, time
from sandboxes import backends, hyperctl_path, print_table, sandbox_command, write_json


def sustain(argv, seconds, workers):
    deadline = time.perf_counter() + seconds
    running = {}
    for _ in range(workers):
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        running[process.pid] = process
    finished = failed = 0
    while running:
        pid, status = os.wait()
        running.pop(pid, None).returncode = os.waitstatus_to_exitcode(status)
        if os.waitstatus_to_exitcode(status) == 0:
            finished += 1
        else:
            failed += 1
        if time.perf_counter() < deadline:
            process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            running[process.pid] = process
    return finished, failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="fake,process,kvm")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json")
    parser.add_argument("--hyperctl")
    args = parser.parse_args()
    hyperctl = hyperctl_path(args.hyperctl)
    workspace = tempfile.mkdtemp(prefix="hyperctl-rate-")
    cores = os.cpu_count() or 1
    results = []
    for backend, skip in backends(hyperctl, args.backends.split(",")).items():
        if skip:
            results.append({"backend": backend, "skipped": skip})
            continue
        print(f"creation rate: {backend} for {args.seconds:g} s with {args.workers} in flight", file=sys.stderr)
        start = time.perf_counter()
        finished, failed = sustain(sandbox_command(hyperctl, backend, workspace), args.seconds, args.workers)
        elapsed = time.perf_counter() - start
        results.append({"backend": backend, "sandboxes": finished, "failed": failed, "seconds": elapsed,
                        "per_second": finished / elapsed, "per_core_per_second": finished / elapsed / cores})
    shutil.rmtree(workspace)
    print_table(results, f"{'backend':<10} {'per second':>11} {'per core/s':>11} {'finished':>9} {'failed':>7}",
                lambda row: f"{row['backend']:<10} {row['per_second']:>11.1f} {row['per_core_per_second']:>11.1f} {row['sandboxes']:>9} {row['failed']:>7}")
    print(f"{cores} cores, {args.workers} sandboxes in flight; Firecracker publishes 5 microVMs per core per second")
    write_json(args.json, {"cores": cores, "results": results})


if __name__ == "__main__":
    main()
