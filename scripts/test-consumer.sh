#!/usr/bin/env bash
# make test's consumer check: examples/consumer, copied outside the
# repository (no parent go.work, no ../shared), set up and run with the
# steps of README's "Use it from your project" — the one difference being
# that the library comes from this checkout (a replace) instead of
# `go get`, since it is not published.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gopeft-consumer.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp -r "$root/examples/consumer" "$tmp/consumer"
cd "$tmp/consumer"
rm -f go.work go.work.sum
go mod edit -replace "github.com/gopeft/peft=$root" # instead of: go get github.com/gopeft/peft

# README's steps:
go run github.com/gopeft/peft/cmd/gopeft-setup
go run . -model "$root/testdata/hf/llama-tiny"
