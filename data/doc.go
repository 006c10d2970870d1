// Package data turns instruction and dialogue records into training
// samples for causal language models, and samples into padded batches.
//
// Records (the seed notes' formats):
//
//   - alpaca instruction data, JSON or JSONL: {"instruction", "input",
//     "output"} (+ optional "system", "history"): ReadInstructions;
//   - dialogues in ShareGPT's {"conversations": [{"from", "value"}]} or
//     OpenAI's {"messages": [{"role", "content"}]} layout:
//     ReadConversations.
//
// A Template (alpaca, ChatML for Qwen, Llama 3, Llama 2, raw; a
// GoTemplate written with text/template; or a tokenizer's own chat
// template through ChatTemplate) lays a conversation out as prompt and
// answer segments. Tokenized, a sample is
//
//	input_ids      = <bos> Q1 Q2 A1 A2 A3 <eos>
//	labels         = -100 -100 -100 A1 A2 A3 <eos>
//	attention_mask = 1 …
//
// so the loss covers the answers only. A multi-turn dialogue becomes one
// sample with every answer learned (AllTurns: Q1A1Q2A2Q3A3) or one sample
// per answer with only that answer learned (PerTurn: Q1A1, Q1A1Q2A2,
// Q1A1Q2A2Q3A3). MaxLength truncates keeping the answer (KeepAnswer) or the
// head (TruncateRight); Packing joins short samples. Bad records get
// errors naming file and line, or are skipped and counted (SkipInvalid),
// before training starts.
//
// A Collator pads a batch dynamically: right for training, left for
// generation, with attention mask 0 and label -100 on padding. Order gives
// each epoch's seeded permutation.
//
// Tokenization goes through the small Tokenizer interface; FromTokenizer
// adapts the library's tokenizer package (HF tokenizer.json).
package data
