#!/usr/bin/env bash
# Regenerate tokenizer/testdata/diff.json.gz, the differential test data of
# package tokenizer, from the reference implementations on npm (HF's Rust
# tokenizers through its Node binding, and gpt-3-encoder for GPT-2). Only
# needed when the corpus or the test tokenizers change; the tests read the
# committed file.
#
#   scripts/gen-tokenizer-diff.sh                 regenerate
#   scripts/gen-tokenizer-diff.sh --show NAME I   print the reference result for corpus string I
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$root/scripts/fetch-tokenizers.sh" >/dev/null
dir=${GOPEFT_TOKENIZERS:-${GOPEFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gopeft}/tokenizers}
ref="$dir/reference-npm"
if [ ! -f "$ref/.ready" ]; then
  rm -rf "$ref" && mkdir -p "$ref"
  (cd "$ref" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund tokenizers@0.23.2 gpt-3-encoder@1.1.4)
  touch "$ref/.ready"
fi
if [ "${1:-}" = "--show" ]; then
  NODE_PATH="$ref/node_modules" node "$root/scripts/gen-tokenizer-diff.cjs" "$dir" --show "$2" "$3"
else
  mkdir -p "$root/tokenizer/testdata"
  NODE_PATH="$ref/node_modules" node "$root/scripts/gen-tokenizer-diff.cjs" "$dir" "$root/tokenizer/testdata/diff.json.gz"
fi
