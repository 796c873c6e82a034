#!/bin/sh
# Installs wrk (the HTTP load generator the benchmarks drive) from Debian's packages when it is missing.
# Needs root (or sudo) on a Debian or Ubuntu machine. Not part of `make test`.
set -eu
if command -v wrk >/dev/null 2>&1; then
    echo "wrk is already installed: $(command -v wrk)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
$SUDO apt-get update
$SUDO apt-get install -y wrk
wrk --version 2>&1 | head -n 1 || true
