// Command quickstart is what `make demo` runs: parameter-efficient
// fine-tuning end to end, on real Chinese text that nobody in this project
// wrote — the 唐诗三百首 and 宋诗一百首 of Debian's fortunes-zh package
// (GPL; `make demo` installs it, the poems are read from
// /usr/share/games/fortunes and never copied into the repository).
//
//  1. A small LLaMA-family base (4 layers, hidden 128, attention biases,
//     a character vocabulary written as a HF tokenizer.json and loaded
//     through the tokenizer package) is trained from scratch on the full
//     text of every poem — 《title》, 作者：author, the verse — as a
//     character-level language model, and cached as a HF folder in
//     ~/.cache/gopeft/quickstart (retrained when missing or unreadable).
//  2. The task is built from the poems' regular couplets (two half-lines
//     of 5 or 7 characters, up to MaxCouplets from anywhere in a poem):
//     这一联是五言还是七言？<couplet> → 五言 or 七言. The answer follows
//     from the couplet in the question, so what tuning teaches carries over
//     to unseen couplets. The set is split by poem: one poem in eight is
//     held out and none of its couplets is trained on.
//  3. The chosen method (LoRA by default) is tuned on the training questions
//     with train.Trainer, which writes metrics.jsonl into the output folder
//     (-out); the program draws it as loss and learning-rate curves
//     (charts.Curves) and prints the trainable-parameter line,
//     peft.EstimateMemory's estimate against the measured peak RSS, and the
//     held-out accuracy before and after, two ways: exact match of the
//     greedy answer (generate; the main metric), and rank classification
//     of the answer against three wrong ones (ia3.RankClassify).
//  4. The adapter is saved, reloaded with peft.Load on a fresh base (same
//     answers), merged with MergeAndUnload (same answers), and a few
//     held-out questions are answered with the sampling settings of the
//     base's generation_config.json (and top-k 5).
//  5. The before/after accuracy of every method run is drawn as grouped
//     bars (charts.Accuracy) into the output folder.
//
// -method all runs every method (full fine-tuning, LoRA, AdaLoRA, IA3,
// LoHa, LoKr, OFT, BOFT, HRA, VeRA, FourierFT, LN tuning, prompt tuning,
// P-tuning, prefix tuning, adaption prompt, multitask prompt tuning,
// bottleneck adapters, BitFit, freeze tuning) and
// prints one table: accuracy, trainable %, seconds, peak memory.
//
//	go run ./examples/quickstart [-method lora|adalora|ia3|loha|lokr|oft|boft|hra|vera|fourierft|lntuning|prompt|ptuning|prefix|adaption|multitask|adapter|bitfit|freeze|full|all] [-epochs N] [-out DIR] [-retrain]
//
// Run time on 2 CPU cores: see README's Quickstart section (the base's
// training takes most of a first run; it is cached for the next ones).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gopeft/peft/adalora"
	"github.com/gopeft/peft/adapter"
	"github.com/gopeft/peft/adaptionprompt"
	"github.com/gopeft/peft/bitfit"
	"github.com/gopeft/peft/charts"
	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/fourierft"
	"github.com/gopeft/peft/freeze"
	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/ia3"
	"github.com/gopeft/peft/internal/memstat"
	"github.com/gopeft/peft/lntuning"
	"github.com/gopeft/peft/loha"
	"github.com/gopeft/peft/lokr"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prefix"
	"github.com/gopeft/peft/prompt"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/tokenizer"
	"github.com/gopeft/peft/train"
	"github.com/gopeft/peft/vera"
)

// AllMethods is the order of the -method all table.
var AllMethods = []string{"full", "lora", "adalora", "ia3", "loha", "lokr", "oft", "boft", "hra", "vera", "fourierft", "lntuning",
	"prompt", "ptuning", "prefix", "adaption", "multitask", "adapter", "bitfit", "freeze"}

func main() {
	method := flag.String("method", "lora", "lora, adalora, ia3, loha, lokr, oft, boft, hra, vera, fourierft, lntuning, prompt, ptuning, prefix, adaption, multitask, adapter, bitfit, freeze, full, or all")
	cache := flag.String("cache", defaultCache(), "where the trained base model is kept")
	fortunes := flag.String("fortunes", FortuneDir, "folder with fortunes-zh's tang300 and song100")
	epochs := flag.Int("epochs", 0, "tuning epochs (0: the method's default)")
	retrain := flag.Bool("retrain", false, "train the base model again even if it is cached")
	out := flag.String("out", "quickstart-out", "output folder: the Trainer's metrics.jsonl and checkpoint per method, and the charts")
	flag.Parse()
	if err := run(*method, *cache, *fortunes, *out, *epochs, *retrain); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func defaultCache() string {
	dir := os.Getenv("GOPEFT_CACHE")
	if dir == "" {
		c, err := os.UserCacheDir()
		if err != nil {
			c = os.TempDir()
		}
		dir = filepath.Join(c, "gopeft")
	}
	return filepath.Join(dir, "quickstart")
}

// template lays an instruction out for training and generation: the
// question after 问：, the answer after 答：, then </s>.
func template() (data.Template, error) {
	return data.NewGoTemplate(data.GoTemplate{User: "问：{{.User}}\n答：", Assistant: "{{.Assistant}}", BOS: true, EOS: true})
}

// Seed is the seed of every random draw (split, initialisation, shuffling, sampling).
const Seed = 42

// MaxCouplets is how many couplets of one poem the task uses at most
// (spread over the poem), so that the long poems do not dominate it.
const MaxCouplets = 8

func run(method, cache, fortunes, out string, epochs int, retrain bool) error {
	methods := []string{method}
	if method == "all" {
		methods = AllMethods
	}
	for _, m := range methods {
		if _, err := methodSpec(m); err != nil {
			return err
		}
	}
	start := time.Now()
	poems, err := LoadPoems(fortunes)
	if err != nil {
		return err
	}
	qs := Instructions(poems, MaxCouplets)
	trainQs, testQs := Split(qs, len(poems), 8, Seed)
	fmt.Printf("read %d poems from %s (fortunes-zh: %s); %d questions on their couplets, %d for training, %d held out (%d poems)\n",
		len(poems), fortunes, strings.Join(FortuneFiles, ", "), len(qs), len(trainQs), len(testQs), (len(poems)+7)/8)

	base, tok, err := loadOrTrainBase(cache, poems, retrain)
	if err != nil {
		return err
	}
	base.Free()
	if err := covers(tok, qs); err != nil {
		return err
	}
	tmpl, err := template()
	if err != nil {
		return err
	}
	dtok := data.FromTokenizer(tok)
	trainSet, err := data.Instructions(dtok, Records(trainQs), data.Options{Template: tmpl, MaxLength: 64})
	if err != nil {
		return err
	}
	evalSet, err := data.Instructions(dtok, Records(testQs), data.Options{Template: tmpl, MaxLength: 64})
	if err != nil {
		return err
	}
	ev := &evaluator{tok: tok, dtok: dtok, tmpl: tmpl, qs: testQs}

	fresh := func() (*llama.Model, error) { return llama.Load(cache) }
	b, err := fresh()
	if err != nil {
		return err
	}
	before, err := ev.accuracy(b)
	b.Free()
	if err != nil {
		return err
	}
	fmt.Printf("\nheld-out accuracy of the base model before tuning: %s\n", before)

	var rows []result
	for _, m := range methods {
		r, err := tune(m, cache, out, fresh, ev, trainSet, evalSet, epochs, len(methods) == 1)
		if err != nil {
			return fmt.Errorf("%s: %w", m, err)
		}
		r.before = before
		rows = append(rows, r)
	}
	if len(rows) > 1 {
		fmt.Printf("\n%d held-out questions (%d poems), %d training questions; accuracy before → after tuning:\n\n",
			len(testQs), (len(poems)+7)/8, len(trainQs))
		fmt.Print(table(rows))
	}
	bars := make([]charts.BeforeAfter, len(rows))
	for i, r := range rows {
		bars[i] = charts.BeforeAfter{Label: r.label, Before: r.before.exact, After: r.after.exact}
	}
	files, err := charts.Accuracy(bars, fmt.Sprintf("held-out exact match before and after tuning (%d questions)", len(testQs)),
		filepath.Join(out, "accuracy"))
	if err != nil {
		return err
	}
	fmt.Printf("\nchart of the accuracies: %s\n", strings.Join(files, ", "))
	fmt.Printf("\ntotal %s\n", time.Since(start).Round(time.Second))
	return nil
}

// ---- the base model ----------------------------------------------------

// baseVersion changes whenever the base's architecture or training does, so
// a cached base from another version is retrained.
const baseVersion = "quickstart-base-v3"

func baseConfig(vocab int) *llama.Config {
	bos, pad := int64(1), int64(0)
	return &llama.Config{ModelType: "llama", HiddenSize: 128, IntermediateSize: 384, NumHiddenLayers: 4,
		NumAttentionHeads: 4, NumKeyValueHeads: 4, VocabSize: int64(vocab), RMSNormEps: 1e-6, RopeTheta: 10000,
		MaxPositionEmbeddings: 256, TieWordEmbeddings: true, AttentionBias: true, HiddenAct: "silu",
		InitializerRange: 0.02, BosTokenID: &bos, EosTokenID: int64(2), PadTokenID: &pad}
}

// The base's training: the full text of every poem (《title》, 作者,
// verse), a few times over: a character-level language model of the poems,
// in about a minute and a half on 2 cores.
const (
	blockLen   = 128
	baseEpochs = 5
	baseLR     = 5e-3
)

// promptChars join the poems' characters in the base's vocabulary: those
// of the template, the question and the answers. A change that adds a
// character changes the base: bump baseVersion.
const promptChars = "问答：\n《》，。" + FormQuestion + "四言五言六言七言"

// corpusKey identifies the base's training: the code version and the text.
func corpusKey(poems []Poem) string {
	h := sha256.New()
	h.Write([]byte(baseVersion))
	for _, p := range poems {
		h.Write([]byte(p.Text()))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

type stamp struct {
	Version string `json:"version"`
	Corpus  string `json:"corpus"`
	Seconds int    `json:"train_seconds"`
	Loss    string `json:"final_loss"`
}

const stampFile = "quickstart.json"

func loadOrTrainBase(dir string, poems []Poem, retrain bool) (*llama.Model, *tokenizer.Tokenizer, error) {
	key := corpusKey(poems)
	if !retrain {
		var st stamp
		b, err := os.ReadFile(filepath.Join(dir, stampFile))
		if err == nil && json.Unmarshal(b, &st) == nil && st.Version == baseVersion && st.Corpus == key {
			tok, terr := tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
			m, merr := llama.Load(dir)
			if terr == nil && merr == nil {
				fmt.Printf("base model: cached in %s (trained in %ds, final loss %s; -retrain trains it again)\n", dir, st.Seconds, st.Loss)
				return m, tok, nil
			}
			if m != nil {
				m.Free()
			}
			fmt.Printf("base model in %s is unreadable (%v), training it again\n", dir, errors.Join(terr, merr))
		}
	}
	// Train into a temporary folder next to dir, then rename: a run killed
	// half-way never leaves a half-written cache.
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".tmp")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(tmp)
	var texts []string
	for _, p := range poems {
		texts = append(texts, p.Text())
	}
	tok, err := WriteCharTokenizer(tmp, Chars(append(texts, promptChars)...))
	if err != nil {
		return nil, nil, err
	}
	cfg := baseConfig(tok.VocabSize(true))
	m, err := llama.New(cfg, Seed)
	if err != nil {
		return nil, nil, err
	}
	_, total := nn.CountParams(m)
	corpus, err := corpusBlocks(tok, texts)
	if err != nil {
		m.Free()
		return nil, nil, err
	}
	fmt.Printf("base model: training a LLaMA (%d layers, hidden %d, vocab %d characters, %s params) from scratch\n"+
		"  on the poems (%s tokens in %d blocks, %d epochs); it is cached in %s for the next runs\n",
		cfg.NumHiddenLayers, cfg.HiddenSize, tok.VocabSize(true), peft.Commas(total), peft.Commas(int64(corpus.Tokens())), corpus.Len(), baseEpochs, dir)
	t0 := time.Now()
	tr := train.New(m, train.Config{LR: baseLR, BatchSize: 16, Epochs: baseEpochs, WarmupRatio: 0.05,
		Schedule: train.Cosine, MaxGradNorm: 1, WeightDecay: 0.01, Seed: Seed,
		LogSteps: logSteps(corpus.Len(), 16, baseEpochs), Progress: newBar()})
	if err := tr.Fit(corpus, nil); err != nil {
		m.Free()
		return nil, nil, err
	}
	endBar()
	secs := int(time.Since(t0).Seconds())
	losses := tr.Losses()
	last := "?"
	if len(losses) > 0 {
		last = fmt.Sprintf("%.3f", losses[len(losses)-1])
	}
	if err := m.Save(tmp); err != nil {
		m.Free()
		return nil, nil, err
	}
	gen, _ := json.MarshalIndent(map[string]any{"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
		"do_sample": true, "temperature": 0.7, "top_p": 0.9, "top_k": 0, "max_new_tokens": 12}, "", "  ")
	st, _ := json.MarshalIndent(stamp{Version: baseVersion, Corpus: key, Seconds: secs, Loss: last}, "", "  ")
	if err := errors.Join(writeAtomic(filepath.Join(tmp, "generation_config.json"), gen),
		writeAtomic(filepath.Join(tmp, stampFile), st)); err != nil {
		m.Free()
		return nil, nil, err
	}
	if err := os.RemoveAll(dir); err != nil {
		m.Free()
		return nil, nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		m.Free()
		return nil, nil, err
	}
	tok, err = tokenizer.Load(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		m.Free()
		return nil, nil, err
	}
	fmt.Printf("base model: trained in %ds, final loss %s, saved to %s\n", secs, last, dir)
	return m, tok, nil
}

// corpusBlocks tokenizes each poem as <s> text </s> and cuts it into blocks
// of at most blockLen tokens, every token a label (plain language modelling).
func corpusBlocks(tok *tokenizer.Tokenizer, texts []string) (*data.Dataset, error) {
	ds := &data.Dataset{PadID: 0}
	for _, t := range texts {
		ids, err := tok.EncodeIDs(t, false)
		if err != nil {
			return nil, err
		}
		seq := append([]int64{1}, toInt64(ids)...)
		seq = append(seq, 2)
		for i := 0; i < len(seq)-1; i += blockLen {
			j := min(i+blockLen, len(seq))
			blk := append([]int64(nil), seq[i:j]...)
			if len(blk) < 2 {
				break
			}
			mask := make([]int64, len(blk))
			for k := range mask {
				mask[k] = 1
			}
			ds.Samples = append(ds.Samples, data.Sample{InputIDs: blk, Labels: append([]int64(nil), blk...), AttentionMask: mask})
		}
	}
	return ds, nil
}

// covers checks that the vocabulary has every character of the questions
// and answers (one missing would be read as <unk>).
func covers(tok *tokenizer.Tokenizer, qs []Question) error {
	for _, q := range qs {
		for _, s := range append([]string{q.Prompt, q.Answer}, q.Wrong...) {
			ids, err := tok.EncodeIDs(s, false)
			if err != nil {
				return err
			}
			for _, id := range ids {
				if id == 3 {
					return fmt.Errorf("the base's vocabulary has no character for %q in %q: add it to promptChars", s, q.Prompt)
				}
			}
		}
	}
	return nil
}

func toInt64(ids []int) []int64 {
	out := make([]int64, len(ids))
	for i, v := range ids {
		out[i] = int64(v)
	}
	return out
}

func logSteps(samples, batch, epochs int) int {
	steps := (samples + batch - 1) / batch * epochs
	if isTerminal() {
		return 1
	}
	return max(1, steps/8)
}

// ---- methods --------------------------------------------------------------

// spec is one method's configuration for this task.
type spec struct {
	name   string // as in the table
	label  string // as in the chart
	config func() peft.Config
	// configSteps, when set, makes the config from the run's number of
	// optimizer steps (AdaLoRA's total_step)
	configSteps func(steps int) peft.Config
	estimate    peft.MemoryOptions
	lr          float64
	epochs      int
	task0       bool // every row is task 0 (multitask prompt tuning's task_ids)
}

// taskZero gives every forward the task ids of a one-task dataset (all
// 0): what PEFT's Trainer passes from a task_ids column.
type taskZero struct{ *peft.Model }

func (m taskZero) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	if b.TaskIDs == nil {
		rows := int64(1)
		if b.InputIDs != nil {
			rows = b.InputIDs.Size(0)
		} else if b.InputsEmbeds != nil {
			rows = b.InputsEmbeds.Size(0)
		}
		nb := *b
		nb.TaskIDs = s.Zeros(tensor.Int64, rows)
		b = &nb
	}
	return m.Model.ForwardT(s, b)
}

func methodSpec(m string) (*spec, error) {
	switch m {
	case "full":
		return &spec{label: "full", name: "full fine-tuning", lr: 1e-3, epochs: tuneEpochs,
			estimate: peft.MemoryOptions{Method: "full"}}, nil
	case "lora":
		// modules_to_save "norm": the RMSNorms' weights (9 × 128; PEFT
		// matches module names by suffix) are trained too, as copies saved
		// with the adapter. The base's small logits (see roundTrip's
		// comment on top-k) keep LoRA alone from making its answers likely
		// (eval loss ~2 instead of ~0.6); the norms scale them.
		return &spec{label: "LoRA", name: "LoRA (r 16, all linear; norms)", lr: 3e-3, epochs: tuneEpochs,
			config: func() peft.Config {
				return &lora.Config{R: 16, LoraAlpha: 32, TargetModules: lora.Regex("all-linear"), ModulesToSave_: []string{"norm"}}
			},
			estimate: peft.MemoryOptions{Method: "lora", R: 16, TargetModules: []string{"all-linear"}}}, nil
	case "adalora":
		// LoRA's spec with SVD-form layers: rank 16 everywhere at first,
		// 8 on average after the budget phase (the middle 70% of the run)
		return &spec{label: "AdaLoRA", name: "AdaLoRA (r 16 → 8, all linear; norms)", lr: 3e-3, epochs: tuneEpochs,
			configSteps: func(steps int) peft.Config {
				c := adalora.NewConfig(steps)
				c.InitR, c.TargetR, c.LoraAlpha = 16, 8, 32
				c.Tinit, c.Tfinal = steps/10, steps/5
				c.TargetModules, c.ModulesToSave_ = peft.TargetRegex("all-linear"), []string{"norm"}
				return c
			},
			estimate: peft.MemoryOptions{Method: "adalora", R: 16, TargetModules: []string{"all-linear"}}}, nil
	case "ia3":
		return &spec{label: "IA3", name: "IA3", lr: 1e-2, epochs: tuneEpochs, config: func() peft.Config { return &ia3.Config{} },
			estimate: peft.MemoryOptions{Method: "ia3"}}, nil
	case "loha":
		return &spec{label: "LoHa", name: "LoHa (r 8, all linear)", lr: 3e-3, epochs: tuneEpochs,
			config: func() peft.Config {
				return &loha.Config{R: 8, Alpha: 16, TargetModules: loha.Regex("all-linear")}
			},
			estimate: peft.MemoryOptions{Method: "loha", R: 8, TargetModules: []string{"all-linear"}}}, nil
	case "lokr":
		return &spec{label: "LoKr", name: "LoKr (r 8, all linear)", lr: 3e-3, epochs: tuneEpochs,
			config: func() peft.Config {
				return &lokr.Config{R: 8, Alpha: 16, TargetModules: lokr.Regex("all-linear")}
			},
			estimate: peft.MemoryOptions{Method: "lokr", R: 8, TargetModules: []string{"all-linear"}}}, nil
	case "prompt":
		return &spec{label: "prompt", name: "prompt tuning (16 tokens)", lr: 3e-2, epochs: tuneEpochs,
			config: func() peft.Config {
				return &prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 16}}
			},
			estimate: peft.MemoryOptions{Method: "prompt", NumVirtualTokens: 16}}, nil
	case "ptuning":
		return &spec{label: "P-tuning", name: "P-tuning (16 tokens, MLP)", lr: 3e-3, epochs: tuneEpochs,
			config: func() peft.Config {
				return &prompt.EncoderConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 16}}
			},
			// The estimate has no P-tuning row; prompt tuning's is the
			// same but for the encoder MLP's weights.
			estimate: peft.MemoryOptions{Method: "prompt", NumVirtualTokens: 16}}, nil
	case "prefix":
		return &spec{label: "prefix", name: "prefix tuning (16 tokens)", lr: 1e-2, epochs: tuneEpochs,
			config: func() peft.Config {
				return &prefix.Config{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 16}}
			},
			estimate: peft.MemoryOptions{Method: "prefix", NumVirtualTokens: 16}}, nil
	case "adapter":
		return &spec{label: "adapters", name: "bottleneck adapters (Houlsby)", lr: 3e-3, epochs: tuneEpochs,
			config:   func() peft.Config { return adapter.Houlsby() },
			estimate: peft.MemoryOptions{Method: "adapter", ReductionFactor: 16}}, nil
	case "bitfit":
		return &spec{label: "BitFit", name: "BitFit", lr: 1e-2, epochs: tuneEpochs, config: func() peft.Config { return &bitfit.Config{} },
			estimate: peft.MemoryOptions{Method: "bitfit"}}, nil
	case "oft", "boft", "hra":
		return orthSpec(m), nil
	case "adaption":
		return &spec{label: "adaption", name: "adaption prompt (10 tokens, all layers)", lr: 1e-2, epochs: tuneEpochs,
			config: func() peft.Config {
				return &adaptionprompt.Config{AdapterLen: 10, AdapterLayers: 4} // every layer of the base
			},
			estimate: peft.MemoryOptions{Method: "adaption-prompt", AdapterLen: 10}}, nil
	case "multitask":
		// One task here: every row is task 0 (PEFT's task_ids column).
		return &spec{label: "multitask", name: "multitask prompt tuning (16 tokens, 1 task)", lr: 3e-2, epochs: tuneEpochs,
			config: func() peft.Config {
				return &prompt.MultitaskConfig{TuningConfig: prompt.TuningConfig{
					PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 16}}, NumTasks: 1, NumRanks: 1}
			},
			task0:    true,
			estimate: peft.MemoryOptions{Method: "multitask-prompt", NumVirtualTokens: 16}}, nil
	case "freeze":
		return &spec{label: "freeze", name: "freeze tuning (last layer)", lr: 2e-3, epochs: tuneEpochs,
			config:   func() peft.Config { return &freeze.Config{TrainableLayers: freeze.Layers(1)} },
			estimate: peft.MemoryOptions{Method: "freeze", TrainableLayers: 1}}, nil
	case "vera", "fourierft", "lntuning":
		return veraFourierLNSpec(m), nil
	}
	return nil, fmt.Errorf("unknown -method %q (want lora, adalora, ia3, loha, lokr, oft, boft, hra, vera, fourierft, lntuning, prompt, ptuning, prefix, adaption, multitask, adapter, bitfit, freeze, full or all)", m)
}

// result is one row of the comparison.
type result struct {
	method, label    string
	trainable, total int64
	before, after    accuracy
	seconds          float64
	peak, estimate   int64
}

const (
	tuneEpochs = 4
	tuneBatch  = 16
	tuneSeq    = 24 // typical question + answer length, for the estimate
)

func tune(method, cache, out string, fresh func() (*llama.Model, error), ev *evaluator,
	trainSet, evalSet *data.Dataset, epochs int, verbose bool) (result, error) {
	sp, _ := methodSpec(method)
	if epochs > 0 {
		sp.epochs = epochs
	}
	fmt.Printf("\n== %s ==\n", sp.name)
	base, err := fresh()
	if err != nil {
		return result{}, err
	}
	var model train.Model = base
	var pm *peft.Model
	if sp.configSteps != nil {
		c := sp.configSteps((trainSet.Len() + tuneBatch - 1) / tuneBatch * sp.epochs)
		sp.config = func() peft.Config { return c }
	}
	if sp.config != nil {
		peft.SetSeed(Seed) // the adapter's initialisation (libtorch seeds itself from the OS otherwise)
		if pm, err = peft.New(base, sp.config()); err != nil {
			base.Free()
			return result{}, err
		}
		model = pm
		defer func() { _ = freeModel(pm) }()
	} else {
		defer base.Free()
	}
	r := result{method: sp.name, label: sp.label}
	r.trainable, r.total = countTrainable(model)
	if sp.task0 {
		model = taskZero{pm}
	}
	fmt.Println(peft.FormatTrainable(r.trainable, r.total))

	shape, err := peft.ReadModelShape(cache)
	if err != nil {
		return r, err
	}
	o := sp.estimate
	o.Batch, o.Seq = tuneBatch, tuneSeq
	est, err := peft.EstimateMemory(shape, o)
	if err != nil {
		return r, err
	}
	r.estimate = est.Total

	_ = memstat.ResetPeak()
	before := memstat.RSS()
	t0 := time.Now()
	runDir := filepath.Join(out, method)
	if err := os.RemoveAll(runDir); err != nil { // a previous run's checkpoints would be resumed or mixed in
		return r, err
	}
	steps := (trainSet.Len() + tuneBatch - 1) / tuneBatch * sp.epochs
	tr := train.New(model, train.Config{LR: sp.lr, BatchSize: tuneBatch, Epochs: sp.epochs, WarmupRatio: 0.05,
		Schedule: train.Cosine, MaxGradNorm: 1, Seed: Seed, EvalSteps: max(1, steps/8), OutputDir: runDir,
		LogSteps: logSteps(trainSet.Len(), tuneBatch, sp.epochs), Progress: newBar()})
	if err := tr.Fit(trainSet, evalSet); err != nil {
		return r, err
	}
	endBar()
	r.seconds = time.Since(t0).Seconds()
	r.peak = memstat.PeakRSS()
	recs, err := charts.ReadMetrics(filepath.Join(runDir, train.MetricsFile))
	if err != nil {
		return r, err
	}
	files, err := charts.Curves(recs, sp.name+": loss and learning rate", filepath.Join(out, "curves-"+method))
	if err != nil {
		return r, err
	}
	fmt.Printf("training log %s, curves %s\n", filepath.Join(runDir, train.MetricsFile), strings.Join(files, ", "))
	// The estimate sizes a process that only trains; this one already holds
	// the data, the tokenizer and what the evaluation left in malloc's heap.
	fmt.Printf("memory: estimate %s (peft.EstimateMemory, batch %d × %d tokens), measured peak RSS %s (%s resident when tuning started)\n",
		mib(r.estimate), tuneBatch, tuneSeq, mib(r.peak), mib(before))

	acc, err := ev.accuracy(model)
	if err != nil {
		return r, err
	}
	r.after = acc
	fmt.Printf("held-out accuracy after %d epochs (%.0fs): %s\n", sp.epochs, r.seconds, acc)
	if verbose {
		if err := roundTrip(sp, pm, base, cache, fresh, ev, acc.answers); err != nil {
			return r, err
		}
	}
	return r, nil
}

func freeModel(m *peft.Model) error {
	if base, err := m.Unload(); err == nil {
		if lm, ok := base.(*llama.Model); ok {
			lm.Free()
		}
		return nil
	} else {
		return err
	}
}

func countTrainable(m train.Model) (int64, int64) {
	return nn.CountParams(m.(nn.Module))
}

// roundTrip saves the adapter (or, for full fine-tuning, the model), loads
// it back onto a fresh base, merges it, checks the answers stay the same,
// and samples a few answers.
func roundTrip(sp *spec, pm *peft.Model, base *llama.Model, cache string, fresh func() (*llama.Model, error),
	ev *evaluator, want []string) error {
	dir, err := os.MkdirTemp("", "quickstart-adapter")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var reloaded generate.Model
	if pm != nil {
		if err := pm.Save(dir); err != nil {
			return err
		}
		b2, err := fresh()
		if err != nil {
			return err
		}
		lm, err := peft.Load(b2, dir)
		if err != nil {
			b2.Free()
			return err
		}
		defer func() { _ = freeModel(lm) }()
		reloaded = lm
		if sp.task0 {
			reloaded = taskZero{lm}
		}
	} else {
		if err := base.Save(dir); err != nil {
			return err
		}
		b2, err := llama.Load(dir)
		if err != nil {
			return err
		}
		defer b2.Free()
		reloaded = b2
	}
	acc, err := ev.accuracy(reloaded)
	if err != nil {
		return err
	}
	fmt.Printf("saved to %s (%s), reloaded: %d/%d held-out answers identical\n", dir, listDir(dir), same(acc.answers, want), len(want))

	if pm != nil {
		merged, err := pm.MergeAndUnload()
		switch {
		case errors.Is(err, peft.ErrNotMergeable):
			fmt.Printf("merge: %s cannot be merged into the weights (%v); it runs as an adapter\n", sp.name, err)
		case err != nil:
			return err
		default:
			macc, err := ev.accuracy(merged)
			if err != nil {
				return err
			}
			fmt.Printf("merged into the base weights (MergeAndUnload): %d/%d held-out answers identical, exact match %.1f%%\n",
				same(macc.answers, want), len(want), 100*macc.exact)
		}
	}

	cfg, err := generate.FromPretrained(cache)
	if err != nil {
		return err
	}
	// The tuned model's right answer is its most likely one, but its
	// distribution has a long tail: the base is small and briefly trained,
	// its embeddings are short and RMSNorm fixes the size of the last hidden
	// state, so no adapter on the linear layers can make the logits much
	// sharper; thousands of unlikely characters together take a large share.
	// Top-k cuts that tail, as generation configs commonly do.
	cfg.TopK = 5
	fmt.Printf("sampling (generation_config.json: temperature %.1f, top-p %.1f; top-k %d, seed %d + question number), held-out questions:\n",
		cfg.Temperature, cfg.TopP, cfg.TopK, Seed)
	seed := int64(Seed)
	cfg.Seed = &seed
	// the first held-out couplet of each poem, until there are three of
	// each form
	var qs []Question
	seen, per := map[int]bool{}, map[string]int{}
	for _, q := range ev.qs {
		if !seen[q.Poem] && per[q.Answer] < 3 {
			qs = append(qs, q)
			per[q.Answer]++
		}
		seen[q.Poem] = true
	}
	answers, err := ev.generate(reloaded, qs, cfg)
	if err != nil {
		return err
	}
	for i, q := range qs {
		mark := "✗"
		if answers[i] == q.Answer {
			mark = "✓"
		}
		fmt.Printf("  %s %s → %s   (right: %s)\n", mark, q.Prompt, answers[i], q.Answer)
	}
	return nil
}

func listDir(dir string) string {
	es, _ := os.ReadDir(dir)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return strings.Join(names, ", ")
}

func same(a, b []string) int {
	n := 0
	for i := range a {
		if i < len(b) && a[i] == b[i] {
			n++
		}
	}
	return n
}

// ---- evaluation -----------------------------------------------------------

type evaluator struct {
	tok  *tokenizer.Tokenizer
	dtok data.Tokenizer
	tmpl data.Template
	qs   []Question
}

type accuracy struct {
	exact, exactFive, exactSeven float64 // exact match of the greedy answer: all, 五言 couplets, 七言 couplets
	all, five, seven             float64 // rank classification: all, 五言, 七言
	answers                      []string
}

func (a accuracy) String() string {
	return fmt.Sprintf("greedy answers exactly right %.1f%% (五言 %.1f%%, 七言 %.1f%%); %.1f%% of 4-way choices (五言 %.1f%%, 七言 %.1f%%)",
		100*a.exact, 100*a.exactFive, 100*a.exactSeven, 100*a.all, 100*a.five, 100*a.seven)
}

// accuracy scores the held-out questions two ways: rank classification
// (the answer against three wrong ones, by length-normalized
// log-probability, T-Few's rule: ia3.RankClassify) and exact match of the
// greedy answer.
func (e *evaluator) accuracy(m generate.Model) (accuracy, error) {
	cfg := generate.DefaultGenerationConfig()
	cfg.TopK = 0
	cfg.MaxNewTokens = 4 // the answers have 1 or 2 characters, then </s>
	ans, err := e.generate(m, e.qs, cfg)
	if err != nil {
		return accuracy{}, err
	}
	var a accuracy
	a.answers = ans
	var ex []ia3.MultipleChoice
	for _, q := range e.qs {
		in, err := e.prompt(q)
		if err != nil {
			return a, err
		}
		mc := ia3.MultipleChoice{Input: in}
		for _, c := range append([]string{q.Answer}, q.Wrong...) {
			ids, err := e.tok.EncodeIDs(c, false)
			if err != nil {
				return a, err
			}
			mc.Choices = append(mc.Choices, append(toInt64(ids), 2))
		}
		ex = append(ex, mc)
	}
	var pred []int
	for i := 0; i < len(ex); i += 32 {
		p, _, err := ia3.RankClassify(m, ex[i:min(i+32, len(ex))], 0)
		if err != nil {
			// ia3.RankClassify does not take the virtual tokens' logits
			// of prompt tuning and P-tuning into account: no score.
			pred = nil
			break
		}
		pred = append(pred, p...)
	}
	// per form (0: 五言, 1: 七言): questions, exact answers, right choices
	var n, okX, okC [2]int
	for i, q := range e.qs {
		k := 0
		if q.Answer == Forms[7] {
			k = 1
		}
		n[k]++
		if ans[i] == q.Answer {
			okX[k]++
		}
		if pred != nil && pred[i] == 0 {
			okC[k]++
		}
	}
	frac := func(a, b int) float64 { return float64(a) / float64(max(1, b)) }
	a.exact = frac(okX[0]+okX[1], n[0]+n[1])
	a.exactFive, a.exactSeven = frac(okX[0], n[0]), frac(okX[1], n[1])
	if pred == nil {
		a.all, a.five, a.seven = math.NaN(), math.NaN(), math.NaN()
		return a, nil
	}
	a.all = frac(okC[0]+okC[1], n[0]+n[1])
	a.five, a.seven = frac(okC[0], n[0]), frac(okC[1], n[1])
	return a, nil
}

// generate answers each question: the prompt as the template lays it out
// for training, left-padded in batches, cut at </s> or a line break.
func (e *evaluator) generate(m generate.Model, qs []Question, cfg generate.GenerationConfig) ([]string, error) {
	cfg.EOSTokenID = generate.TokenIDs{2}
	pad := int64(0)
	cfg.PadTokenID = &pad
	if cfg.MaxNewTokens == 0 {
		cfg.MaxNewTokens = 12
	}
	var out []string
	const batch = 64
	for i := 0; i < len(qs); i += batch {
		var prompts [][]int64
		for _, q := range qs[i:min(i+batch, len(qs))] {
			ids, err := e.prompt(q)
			if err != nil {
				return nil, err
			}
			prompts = append(prompts, ids)
		}
		in := generate.LeftPad(prompts, pad)
		if cfg.Seed != nil { // question k samples with seed+k: its own draws, not the same ones as every other row
			for j := range prompts {
				in.Seeds = append(in.Seeds, *cfg.Seed+int64(i+j))
			}
		}
		res, err := generate.Generate(context.Background(), m, in, cfg)
		if err != nil {
			return nil, err
		}
		for r := range prompts {
			ids := res.NewTokens(r)
			var keep []int
			for _, id := range ids {
				if id == 2 {
					break
				}
				keep = append(keep, int(id))
			}
			text := e.tok.Decode(keep, true)
			if k := strings.IndexByte(text, '\n'); k >= 0 {
				text = text[:k]
			}
			out = append(out, strings.TrimSpace(text))
		}
	}
	return out, nil
}

// prompt is a question's ids as the template lays them out for training,
// up to where the answer starts.
func (e *evaluator) prompt(q Question) ([]int64, error) {
	return data.Prompt(e.dtok, e.tmpl, data.Conversation{Turns: []data.Turn{{User: q.Prompt}}})
}

// ---- output -----------------------------------------------------------------

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }

func table(rows []result) string {
	var sb strings.Builder
	fmt.Fprintln(&sb, "| method | trainable params | trainable % | exact match (五言 / 七言) | 4-way choice (五言 / 七言) | train time | peak RSS (estimate) |")
	fmt.Fprintln(&sb, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, r := range rows {
		fmt.Fprintf(&sb, "| %s | %s | %.2f%% | %.1f%% → **%.1f%%** (%.0f%% / %.0f%%) | %.1f%% → %.1f%% (%.0f%% / %.0f%%) | %.0f s | %s (%s) |\n",
			r.method, peft.Commas(r.trainable), 100*float64(r.trainable)/float64(max(1, r.total)),
			100*r.before.exact, 100*r.after.exact, 100*r.after.exactFive, 100*r.after.exactSeven,
			100*r.before.all, 100*r.after.all, 100*r.after.five, 100*r.after.seven,
			r.seconds, mib(r.peak), mib(r.estimate))
	}
	return sb.String()
}

// ---- progress bar -------------------------------------------------------------

// bar shows the Trainer's progress lines in place on a terminal (each line
// overwrites the previous one) and as they come otherwise.
type bar struct {
	w    io.Writer
	tty  bool
	open bool
}

var current *bar

func newBar() io.Writer {
	current = &bar{w: os.Stderr, tty: isTerminal()}
	return current
}

func (b *bar) Write(p []byte) (int, error) {
	if !b.tty {
		return b.w.Write(p)
	}
	line := strings.TrimRight(string(p), "\n")
	if strings.HasPrefix(line, "eval") {
		if b.open {
			fmt.Fprintln(b.w)
		}
		b.open = false
		fmt.Fprintln(b.w, line)
		return len(p), nil
	}
	fmt.Fprintf(b.w, "\r\x1b[K%s", line)
	b.open = true
	return len(p), nil
}

func endBar() {
	if current != nil && current.open {
		fmt.Fprintln(current.w)
		current.open = false
	}
}

func isTerminal() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// veraFourierLNSpec is the spec of VeRA (rank 64 on every linear layer),
// FourierFT (1000 coefficients per linear layer) and LN tuning (PEFT's
// defaults: every RMSNorm).
func veraFourierLNSpec(m string) *spec {
	switch m {
	case "vera":
		return &spec{label: "VeRA", name: "VeRA (r 64, all linear)", lr: 2e-2, epochs: tuneEpochs,
			config:   func() peft.Config { return &vera.Config{R: 64, TargetModules: peft.TargetRegex(peft.AllLinear)} },
			estimate: peft.MemoryOptions{Method: "vera", R: 64, TargetModules: []string{"all-linear"}}}
	case "fourierft":
		return &spec{label: "FourierFT", name: "FourierFT (1000 freq., all linear)", lr: 3e-2, epochs: tuneEpochs,
			config: func() peft.Config {
				return &fourierft.Config{NFrequency: 1000, TargetModules: peft.TargetRegex(peft.AllLinear)}
			},
			estimate: peft.MemoryOptions{Method: "fourierft", NFrequency: 1000, TargetModules: []string{"all-linear"}}}
	}
	return &spec{label: "LN tuning", name: "LN tuning (every norm)", lr: 1e-2, epochs: tuneEpochs,
		config: func() peft.Config { return &lntuning.Config{} }, estimate: peft.MemoryOptions{Method: "lntuning"}}
}
