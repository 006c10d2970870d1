// Encode throughput of HF's Rust tokenizers through its Node binding (npm
// tokenizers), the reference for package tokenizer's numbers. Run through
// scripts/bench-tokenizers.sh, which runs the Go side on the same text.
//
//   node bench-tokenizers.cjs CACHE_DIR TEXT_FILE NAME...
//
// Prints one line per tokenizer and mode, MB/s of UTF-8 input:
//   lines  one encode call per line, awaited one after another
//   batch  encodeBatch over chunks of 1024 lines (Rust's own thread pool)
//   whole  one encode call on the whole text
// Each mode runs twice; pass 1 starts with an empty BPE cache.
'use strict';
const fs = require('fs');
const path = require('path');
const { Tokenizer } = require('tokenizers');

async function main() {
  const [dir, textFile, ...names] = process.argv.slice(2);
  const text = fs.readFileSync(textFile, 'utf8');
  const lines = text.split('\n');
  const mb = Buffer.byteLength(text, 'utf8') / 1e6;
  for (const name of names) {
    if (name === 'gpt2') { // OpenAI's encoder ported to JavaScript (gpt-3-encoder)
      const enc = require('gpt-3-encoder');
      // Only per line: its encode() concatenates arrays token by token,
      // quadratic on one large input.
      for (const mode of ['lines']) {
        const rates = [];
        let n = 0;
        for (let pass = 0; pass < 2; pass++) {
          const t0 = process.hrtime.bigint();
          n = 0;
          for (const l of lines) n += enc.encode(l).length;
          rates.push(mb / (Number(process.hrtime.bigint() - t0) / 1e9));
        }
        console.log(`gpt-3-encoder ${name} ${mode} ${rates.map((r) => r.toFixed(2)).join(' ')} MB/s (${n} tokens)`);
      }
      continue;
    }
    for (const mode of ['lines', 'batch', 'whole']) {
      // A fresh tokenizer per mode, so pass 1 is cold.
      const tok = Tokenizer.fromFile(path.join(dir, name, 'tokenizer.json'));
      const rates = [];
      let n = 0;
      for (let pass = 0; pass < 2; pass++) {
        const t0 = process.hrtime.bigint();
        n = 0;
        if (mode === 'lines') {
          for (const l of lines) n += (await tok.encode(l, null, { addSpecialTokens: false })).getLength();
        } else if (mode === 'batch') {
          for (let i = 0; i < lines.length; i += 1024) {
            for (const e of await tok.encodeBatch(lines.slice(i, i + 1024), { addSpecialTokens: false })) n += e.getLength();
          }
        } else {
          n = (await tok.encode(text, null, { addSpecialTokens: false })).getLength();
        }
        const s = Number(process.hrtime.bigint() - t0) / 1e9;
        rates.push(mb / s);
      }
      console.log(`hf-node ${name} ${mode} ${rates.map((r) => r.toFixed(2)).join(' ')} MB/s (${n} tokens)`);
    }
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
