#!/usr/bin/env bash
# Encode throughput of package tokenizer against HF's Rust tokenizers
# through its Node binding (and gpt-3-encoder for GPT-2), on the same text
# and machine. The text: ~0.9 MB of Go's own docs and sources from GOROOT
# (HTML, prose, code) plus ~0.2 MB of the multilingual differential corpus.
#
#   scripts/bench-tokenizers.sh                  qwen3,llama3,llama2,gemma3,gpt2-hf,gpt2
#   TOKENIZERS=qwen3,llama3 scripts/bench-tokenizers.sh
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
names=${TOKENIZERS:-qwen3,llama3,llama2,gemma3,gpt2-hf,gpt2}
text=$(mktemp)
trap 'rm -f "$text"' EXIT
g=$(go env GOROOT)
cat "$g/doc/go_spec.html" "$g/LICENSE" "$g"/src/fmt/*.go "$g"/src/strings/*.go "$g/src/net/http/server.go" \
  "$g/src/net/http/transport.go" | head -c 900000 > "$text"
node -e '
  const d = JSON.parse(require("zlib").gunzipSync(require("fs").readFileSync(process.argv[1])));
  let out = "", n = 0;
  for (const s of d.corpus.slice(0, 8000)) {
    const l = s.replace(/[\r\n]/g, " ") + "\n";
    out += l; n += Buffer.byteLength(l);
    if (n > 200000) break;
  }
  process.stdout.write(out);' "$root/tokenizer/testdata/diff.json.gz" >> "$text"
echo "text: $(wc -c < "$text") bytes, $(wc -l < "$text") lines; $(nproc) CPUs; $(go version | cut -d' ' -f3); node $(node --version)"
NODE_PATH="$ref/node_modules" node "$root/scripts/bench-tokenizers.cjs" "$dir" "$text" ${names//,/ }
(cd "$root" && GOPEFT_TOKBENCH=$names GOPEFT_TOKBENCH_TEXT=$text go test ./tokenizer/ -run '^TestThroughput$' -count=1 -v | grep '^go ')
