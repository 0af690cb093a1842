#!/usr/bin/env python3
"""Concurrency: N sandboxes started at once (N = 1, 8, 32) per backend.

For each backend and N, starts N `hyperctl run --backend B -- true` at the same moment and reports the
time until all of them have finished (each one was created, became ready and ran its command), and the
mean peak RSS per sandbox (GNU time's %M: the largest process of each sandbox's tree). Each point is the
median of --repeat tries. Backends that cannot run here are listed as skipped, with the reason.

    Benchmarks/concurrency.py [--backends fake,process,kvm] [--counts 1,8,32] [--repeat 3] [--json FILE]
"""
import argparse, shutil, statistics, sys, tempfile, time
from sandboxes import backends, hyperctl_path, print_table, read_rss, sandbox_command, start_with_peak_rss, write_json


def one_try(hyperctl, backend, count, workspace):
    start = time.perf_counter()
    started = [start_with_peak_rss(sandbox_command(hyperctl, backend, workspace)) for _ in range(count)]
    codes = [process.wait() for process, _ in started]
    elapsed = time.perf_counter() - start
    if any(codes):
        sys.exit(f"concurrency: {backend} x{count}: exit codes {sorted(set(codes))}")
    rss = [value for value in (read_rss(path) for _, path in started) if value is not None]
    return elapsed * 1000, (sum(rss) / len(rss)) if rss else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="fake,process,kvm")
    parser.add_argument("--counts", default="1,8,32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--hyperctl")
    args = parser.parse_args()
    hyperctl = hyperctl_path(args.hyperctl)
    workspace = tempfile.mkdtemp(prefix="hyperctl-concurrency-")
    results = []
    for backend, skip in backends(hyperctl, args.backends.split(",")).items():
        if skip:
            results.append({"backend": backend, "skipped": skip})
            continue
        for count in [int(n) for n in args.counts.split(",")]:
            tries = []
            for attempt in range(args.repeat):
                print(f"concurrency: {backend} x{count}, try {attempt + 1} of {args.repeat}", file=sys.stderr, flush=True)
                tries.append(one_try(hyperctl, backend, count, workspace))
            rss = [value for _, value in tries if value is not None]
            results.append({"backend": backend, "sandboxes": count, "all_done_ms": statistics.median(t for t, _ in tries),
                            "peak_rss_kib_per_sandbox": statistics.median(rss) if rss else None})
    shutil.rmtree(workspace)
    def line(row):
        rss = f"{row['peak_rss_kib_per_sandbox']:.0f}" if row["peak_rss_kib_per_sandbox"] is not None else "-"
        return f"{row['backend']:<10} {row['sandboxes']:>4} {row['all_done_ms']:>12.1f} {row['all_done_ms'] / row['sandboxes']:>15.2f} {rss:>21}"
    print_table(results, f"{'backend':<10} {'N':>4} {'all done ms':>12} {'ms per sandbox':>15} {'peak RSS KiB/sandbox':>21}", line)
    print(f"medians of {args.repeat} tries; 'all done' runs from the first start to the last exit")
    write_json(args.json, {"results": results})


if __name__ == "__main__":
    main()
