#!/usr/bin/env bash
# Fails on an import cycle between the library's files or between its top-level modules, so the
# layers of STYLE.md (the binary -> server -> engine -> handler, codec, service -> the leaves ->
# endpoint -> error) cannot rot. The reading and the graph are in layers.py (Python 3's standard
# library only); the edges allowed to close a cycle, each with its reason, are at its top.
#
# Usage: scripts/layers.sh [ROOT]   ROOT: a directory with a src/ folder (default: this repo).
# Exit 0 with one summary line, or 1 with every cycle on stderr, each edge with the file:line
# that makes it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python3 "$here/layers.py" "${1:-$here/..}"
