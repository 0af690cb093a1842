#!/usr/bin/env bash
# Builds hyperctl (debug and release), runs the whole test suite, then the nested harnesses (real Linux
# microVMs on an emulated-SVM KVM: the default guest, then the Docker flavour). This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
Scripts/setup.sh
swift build -c release
swift test
Tests/Nested/run.sh
Tests/Nested/docker.sh
