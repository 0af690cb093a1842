#!/usr/bin/env bash
# Cold-start comparison: hyperctl's backends against peers measured in the same run.
# Reports medians of interleaved runs; the `hyperctl bench cold-start` command will take this over.
#   Benchmarks/cold-start.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
swift build -c release >/dev/null
hyperctl=$PWD/.build/release/hyperctl
workspace=$(mktemp -d)
trap 'rm -rf "$workspace"' EXIT

rows=("hyperctl-fake|$hyperctl run --backend fake --workspace $workspace -- true")
if command -v bwrap >/dev/null; then
    rows+=("bwrap|bwrap --unshare-all --die-with-parent --ro-bind /usr /usr --symlink usr/lib64 /lib64 --symlink usr/lib /lib --symlink usr/bin /bin --proc /proc --dev /dev --tmpfs /tmp --bind $workspace $workspace /bin/true")
else
    echo "bwrap: skipped (bubblewrap is not installed; Scripts/setup.sh installs it)" >&2
fi
rows+=("true|/bin/true")

declare -A samples
for ((run = 0; run < runs + 2; run++)); do
    for row in "${rows[@]}"; do
        name=${row%%|*}
        command=${row#*|}
        start=$(date +%s%N)
        $command >/dev/null
        end=$(date +%s%N)
        # The first two rounds are warm-up.
        ((run < 2)) || samples[$name]+="$(( (end - start) / 1000 )) "
    done
done

printf '%-16s %10s %10s\n' row median_us p90_us
for row in "${rows[@]}"; do
    name=${row%%|*}
    read -r median p90 < <(tr ' ' '\n' <<<"${samples[$name]}" | grep . | sort -n |
        awk '{v[NR]=$1} END {print v[int((NR+1)/2)], v[int(NR*0.9+0.5)]}')
    printf '%-16s %10s %10s\n' "$name" "$median" "$p90"
done
