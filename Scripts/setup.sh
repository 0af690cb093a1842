#!/usr/bin/env bash
# Installs the Debian packages that hyperctl's tests, benchmarks and peers need on a fresh machine.
# Idempotent: packages already present are skipped. Needs root (or sudo) for apt-get.
set -euo pipefail

packages=(
    bubblewrap      # peer benchmark for the process backend
    crun            # peer benchmark (an OCI runtime)
    hyperfine       # independent whole-command timing
    acpica-tools    # iasl -d checks generated ACPI tables
    busybox-static  # guest user space
    tmux            # drives real terminals in the interactive tests
    python3         # raw-syscall probes in the escape tests; the benchmark script
    time            # peak RSS in the benchmark
    qemu-system-x86 # peer VMM in the benchmark (QEMU microvm)
    cpio lz4 zstd e2fsprogs
)

missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    echo "setup: installing ${missing[*]}" >&2
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null || { echo "setup: the Swift 6 toolchain is not on PATH (https://swift.org/install)" >&2; exit 1; }
