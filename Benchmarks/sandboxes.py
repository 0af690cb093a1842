"""Shared by the throughput benchmarks: which backends can run here, and one sandbox as a command."""
import json, os, subprocess, sys, tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def hyperctl_path(argument):
    path = os.path.abspath(argument or os.path.join(ROOT, ".build", "release", "hyperctl"))
    if not os.access(path, os.X_OK):
        sys.exit(f"{path} is missing; run `swift build -c release` first")
    return path


def backends(hyperctl, wanted):
    """Returns {backend: None} for backends that can run here, {backend: reason} for the others."""
    facts = {row["name"]: row for row in json.loads(subprocess.run([hyperctl, "backends", "--json"], capture_output=True, text=True).stdout)}
    verdicts = {}
    for name in wanted:
        row = facts.get(name)
        if row is None:
            verdicts[name] = "not in this build"
        elif not row["available"]:
            verdicts[name] = "not available here: " + row["reason"]
        elif row["accelerated"] is False:
            verdicts[name] = "not hardware-accelerated here (" + row["reason"] + ")"
        else:
            verdicts[name] = None
    return verdicts


def sandbox_command(hyperctl, backend, workspace):
    return [hyperctl, "run", "--backend", backend, "--workspace", workspace, "--", "true"]


def start_with_peak_rss(argv):
    """Starts argv under GNU time; returns (process, path of its %M output, or None without GNU time)."""
    if not os.access("/usr/bin/time", os.X_OK):
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), None
    fd, path = tempfile.mkstemp(prefix="hyperctl-rss-")
    os.close(fd)
    process = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", path] + argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return process, path


def read_rss(path):
    """The KiB figure GNU time wrote, or None."""
    if path is None:
        return None
    with open(path) as output:
        words = output.read().split()
    os.remove(path)
    return int(words[-1]) if words and words[-1].isdigit() else None


def print_table(results, header, format_row):
    """Prints the header and one line per result; a skipped backend gets its reason instead."""
    print(header)
    for row in results:
        if "skipped" in row:
            print(f"{row['backend']:<10} skipped: {row['skipped']}")
        else:
            print(format_row(row))


def write_json(path, document):
    """Writes the results document to `path`, when one was asked for."""
    if path:
        with open(path, "w") as out:
            json.dump(document, out, indent=2)
