// Package tokenizer loads a HuggingFace tokenizer.json (and the
// tokenizer_config.json beside it) and encodes and decodes text exactly as
// HuggingFace's Rust tokenizers library does: the same ids, the same
// decoded strings.
//
// Supported, in tokenizer.json terms:
//
//   - model: BPE (merges stored as "a b" strings or as ["a","b"] pairs;
//     byte_fallback, fuse_unk, ignore_merges, unk_token,
//     continuing_subword_prefix, end_of_word_suffix), WordPiece, WordLevel.
//   - normalizer: NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents,
//     Prepend, Replace, BertNormalizer, Sequence.
//   - pre_tokenizer: Split (String patterns, and Regex patterns: the GPT-2,
//     Llama 3 / cl100k and Qwen2/3 patterns, look-ahead included, are
//     matched by a hand-written scanner; other look-around-free patterns
//     go through Go's regexp with Oniguruma's Unicode \s, \d and \w),
//     ByteLevel (with and without its regex), Metaspace, Whitespace,
//     WhitespaceSplit, BertPreTokenizer, Punctuation, Digits,
//     CharDelimiterSplit, Sequence.
//   - added_tokens: special and non-special, with lstrip, rstrip,
//     single_word and normalized, split out before the model.
//   - post_processor: TemplateProcessing, BertProcessing,
//     RobertaProcessing, ByteLevel, Sequence.
//   - decoder: ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace,
//     WordPiece, BPEDecoder, CTC, Sequence.
//   - truncation and padding (from the file, or set with WithTruncation
//     and WithPadding) for EncodeBatch.
//
// GPT-2's original encoder.json + vocab.bpe pair loads too (LoadGPT2); it
// then encodes as OpenAI's reference encoder (and the gpt-3-encoder npm
// package) does.
//
// Anything else (a Unigram model, a Precompiled normalizer, a regex with
// look-around outside the known families, ...) is refused at load time with
// an error that names the field; loading never panics.
//
// A *Tokenizer is immutable after loading and safe for concurrent use.
// Offsets (token to character alignment) and pair inputs are not
// implemented.
package tokenizer
