#!/usr/bin/env python3
"""Cold-start benchmark: hyperctl's backends against peers, measured in the same run.

Runs of different rows are interleaved (A B C A B C ...) so that drift on a noisy machine hits every row
alike. Each run is one whole process started with posix_spawn and reaped with wait4, so the figures include
the launcher's own start-up. Reports min, median, p90 and max wall time, each median's ratio to the row's
peer (process against bubblewrap, kvm-minimal against QEMU microvm, on the same tiny guest and /dev/kvm), and
the peak RSS of one extra run measured by GNU time.

The kvm row (`hyperctl run --backend kvm -- true` on the default guest kit) and its companion
kvm-agent-ready (launch to the guest agent's ready message, from each run's report) need a hardware-accelerated
/dev/kvm and the guest kit (Scripts/guest-kit.sh); elsewhere they are listed as skipped, with the reason.

    Benchmarks/cold_start.py [--runs N] [--warmup N] [--json FILE] [--hyperctl PATH]
"""
import argparse, json, os, platform, shutil, statistics, subprocess, sys, tempfile, time


def measure(argv):
    start = time.perf_counter_ns()
    pid = os.posix_spawn(argv[0], argv, {}, file_actions=[
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)])
    _, status, _ = os.wait4(pid, 0)
    elapsed = time.perf_counter_ns() - start
    return elapsed, os.waitstatus_to_exitcode(status)


def peak_rss(argv):
    """Returns the peak RSS in KiB of one run, as GNU time reports it, or None without GNU time."""
    if not os.access("/usr/bin/time", os.X_OK):
        return None
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    pid = os.posix_spawn("/usr/bin/time", ["/usr/bin/time", "-f", "%M", "-o", f"/dev/fd/{write_end}"] + argv, {},
                         file_actions=[(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                                       (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0)])
    os.waitpid(pid, 0)
    os.close(write_end)
    text = os.read(read_end, 256).decode().strip().splitlines()
    os.close(read_end)
    return int(text[-1]) if text and text[-1].isdigit() else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
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
    tiny_guest = os.path.join(workspace, "tiny.elf")
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        rows["kvm-minimal"] = [hyperctl, "boot", "--backend", "kvm", "--kernel", "builtin:hello"]
        qemu = shutil.which("qemu-system-x86_64")
        if qemu:
            if measure([hyperctl, "boot", "--kernel", "builtin:hello", "--export-kernel", tiny_guest])[1] != 0:
                sys.exit("cold_start: could not export the tiny guest")
            rows["qemu-microvm"] = [qemu, "-M", "microvm,rtc=off", "-enable-kvm", "-cpu", "host,-arch-capabilities", "-m", "64",
                                    "-kernel", tiny_guest, "-nodefaults", "-no-reboot", "-serial", "stdio", "-device", "i8042",
                                    "-display", "none"]
        else:
            skipped["qemu-microvm"] = "qemu-system-x86 is not installed"
    else:
        skipped["kvm-minimal"] = "no read-write /dev/kvm"
    # The kvm row's report lives beside the workspace, not in it (the workspace is copied into the guest).
    kvm_report = workspace + "-kvm.json"
    kvm = next((b for b in json.loads(subprocess.run([hyperctl, "backends", "--json"], capture_output=True, text=True).stdout or "[]")
                if b.get("name") == "kvm"), None)
    kit = subprocess.run([os.path.join(os.path.dirname(__file__), "..", "Scripts", "guest-kit.sh"), "--print-dir"],
                         capture_output=True, text=True).stdout.strip()
    if kvm is None or not kvm.get("available"):
        skipped["kvm"] = skipped["kvm-agent-ready"] = "kvm is not available here: " + (kvm or {}).get("reason", "no kvm backend")
    elif not kvm.get("accelerated"):
        skipped["kvm"] = skipped["kvm-agent-ready"] = "kvm here is not hardware-accelerated (" + kvm.get("reason", "") + \
            "); a Linux guest would take minutes. Tests/Nested/run.sh reports the phase shares under emulation instead"
    elif not os.path.isfile(os.path.join(kit, "initramfs.cpio")):
        skipped["kvm"] = skipped["kvm-agent-ready"] = f"no guest kit in {kit}: run Scripts/guest-kit.sh"
    else:
        rows["kvm"] = [hyperctl, "run", "--backend", "kvm", "--workspace", workspace, "--report", kvm_report, "--", "true"]
    rows["true"] = [true]
    peers = {"process": "bwrap", "kvm-minimal": "qemu-microvm", "kvm": "process"}

    samples = {name: [] for name in rows}
    if "kvm" in rows:
        samples["kvm-agent-ready"] = []
    total = args.warmup + args.runs
    for run in range(total):
        print(f"\rcold-start: run {run + 1} of {total}", end="", file=sys.stderr, flush=True)
        for name, argv in rows.items():
            elapsed, code = measure(argv)
            if code != 0:
                sys.exit(f"\ncold_start: {name} exited {code}: {' '.join(argv)}")
            if run >= args.warmup:
                samples[name].append(elapsed)
                if name == "kvm":
                    with open(kvm_report) as report:
                        phases = {event["phase"]: event["ns"] for event in json.load(report)["timeline"]}
                    samples["kvm-agent-ready"].append(phases["agentReady"])
    print(file=sys.stderr)
    rss = {name: peak_rss(argv) for name, argv in rows.items()}
    if "kvm" in rows:
        rss["kvm-agent-ready"] = None
    shutil.rmtree(workspace)
    if os.path.exists(kvm_report):
        os.remove(kvm_report)

    def quantile(values, q):
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    medians = {name: statistics.median(values) for name, values in samples.items()}
    results = []
    for name, values in samples.items():
        peer = peers.get(name)
        results.append({
            "backend": name, "runs": len(values),
            "min_ms": min(values) / 1e6, "median_ms": medians[name] / 1e6, "p90_ms": quantile(values, 0.9) / 1e6,
            "max_ms": max(values) / 1e6, "peak_rss_kib": rss[name],
            "peer": peer, "ratio_to_peer": medians[name] / medians[peer] if peer in medians else None,
        })
    for name, reason in skipped.items():
        results.append({"backend": name, "skipped": reason})

    print(f"{'row':<13} {'median ms':>10} {'p90 ms':>8} {'min ms':>8} {'max ms':>8} {'RSS KiB':>8}  ratio to peer")
    for row in results:
        if "skipped" in row:
            print(f"{row['backend']:<13} skipped: {row['skipped']}")
            continue
        ratio = f"{row['ratio_to_peer']:.2f} ({row['peer']})" if row["ratio_to_peer"] is not None else "-"
        rss_text = str(row["peak_rss_kib"]) if row["peak_rss_kib"] is not None else "-"
        print(f"{row['backend']:<13} {row['median_ms']:>10.2f} {row['p90_ms']:>8.2f} {row['min_ms']:>8.2f} "
              f"{row['max_ms']:>8.2f} {rss_text:>8}  {ratio}")
    print(f"medians of {args.runs} interleaved runs after {args.warmup} warm-up; ratio = median / the peer's median")
    if args.json:
        host = {"cpu": platform.processor() or platform.machine(), "kernel": platform.release(), "cores": os.cpu_count()}
        with open(args.json, "w") as out:
            json.dump({"host": host, "results": results}, out, indent=2)


if __name__ == "__main__":
    main()
