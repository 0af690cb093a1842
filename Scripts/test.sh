#!/usr/bin/env bash
# Builds hyperctl (debug and release) and runs the whole test suite. This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
Scripts/setup.sh
swift build -c release
swift test
