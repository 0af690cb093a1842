#!/usr/bin/env python3
"""Cold-start benchmark: hyperctl's backends against peers, measured in the same run.

Runs of different rows are interleaved (A B C A B C ...) so that drift on a noisy machine hits every row
alike. Each run is one whole process started with posix_spawn and reaped with wait4, so the figures include
the launcher's own start-up. Reports min, median, p90 and max wall time and each median's ratio to the
baseline row. (Peak memory of whole process trees is left to `hyperctl bench`.)

    Benchmarks/cold_start.py [--runs N] [--warmup N] [--baseline ROW] [--json FILE] [--hyperctl PATH]
"""
import argparse, json, os, platform, shutil, statistics, sys, tempfile, time


def measure(argv):
    start = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, {}, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)])
    _, status, _ = os.wait4(pid, 0)
    elapsed = time.perf_counter_ns() - start
    return elapsed, os.waitstatus_to_exitcode(status)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--baseline", default="bwrap")
    parser.add_argument("--json")
    parser.add_argument("--hyperctl", default=os.path.join(os.path.dirname(__file__), "..", ".build", "release", "hyperctl"))
    args = parser.parse_args()
    hyperctl = os.path.abspath(args.hyperctl)
    if not os.access(hyperctl, os.X_OK):
        sys.exit(f"cold_start: {hyperctl} is missing; run `swift build -c release` first")
    workspace = tempfile.mkdtemp(prefix="hyperctl-bench-")
    true = shutil.which("true") or "/bin/true"
    rows = {
        "process": [hyperctl, "run", "--backend", "process", "--workspace", workspace, "--", "/bin/true"],
        "fake": [hyperctl, "run", "--backend", "fake", "--workspace", workspace, "--", "true"],
    }
    skipped = {}
    bwrap = shutil.which("bwrap")
    if bwrap:
        rows["bwrap"] = [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
                         "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/lib", "/lib", "--symlink", "usr/bin", "/bin",
                         "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--bind", workspace, workspace, "/bin/true"]
    else:
        skipped["bwrap"] = "bubblewrap is not installed (Scripts/setup.sh installs it)"
    rows["true"] = [true]

    samples = {name: [] for name in rows}
    total = args.warmup + args.runs
    for run in range(total):
        print(f"\rcold-start: run {run + 1} of {total}", end="", file=sys.stderr, flush=True)
        for name, argv in rows.items():
            elapsed, code = measure(argv)
            if code != 0:
                sys.exit(f"\ncold_start: {name} exited {code}: {' '.join(argv)}")
            if run >= args.warmup:
                samples[name].append(elapsed)
    print(file=sys.stderr)
    os.rmdir(workspace)

    def quantile(values, q):
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    baseline = statistics.median(samples[args.baseline]) if args.baseline in samples else None
    results = []
    for name, values in samples.items():
        median = statistics.median(values)
        results.append({
            "backend": name, "runs": len(values),
            "min_ms": min(values) / 1e6, "median_ms": median / 1e6, "p90_ms": quantile(values, 0.9) / 1e6,
            "max_ms": max(values) / 1e6,
            "ratio_to_baseline": (median / baseline) if baseline else None,
        })
    for name, reason in skipped.items():
        results.append({"backend": name, "skipped": reason})

    print(f"{'row':<10} {'median ms':>10} {'p90 ms':>8} {'min ms':>8} {'max ms':>8} {'ratio':>7}")
    for row in results:
        if "skipped" in row:
            print(f"{row['backend']:<10} skipped: {row['skipped']}")
            continue
        ratio = f"{row['ratio_to_baseline']:.2f}" if row["ratio_to_baseline"] is not None else "-"
        print(f"{row['backend']:<10} {row['median_ms']:>10.2f} {row['p90_ms']:>8.2f} {row['min_ms']:>8.2f} "
              f"{row['max_ms']:>8.2f} {ratio:>7}")
    print(f"medians of {args.runs} interleaved runs after {args.warmup} warm-up; ratio = median / median of {args.baseline}")
    if args.json:
        host = {"cpu": platform.processor() or platform.machine(), "kernel": platform.release(), "cores": os.cpu_count()}
        with open(args.json, "w") as out:
            json.dump({"host": host, "baseline": args.baseline, "results": results}, out, indent=2)


if __name__ == "__main__":
    main()
