package serve

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tokenizer"
)

// The serving fixture: LLaMA-tiny (testdata/hf, vocab 512) with a byte-level
// BPE tokenizer made to fit its vocabulary (the checkpoint ships only a
// SentencePiece model, which package tokenizer does not read), a ChatML
// chat_template, and 16 LoRA adapters with random A and B (different
// seeds), saved with peft's Save.

const numAdapters = 16

// chatML is Qwen2-Instruct's chat template.
const chatML = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

var (
	fixtureOnce sync.Once
	fixtureDir  string
	fixtureErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtureDir != "" {
		os.RemoveAll(fixtureDir)
	}
	os.Exit(code)
}

type fixture struct {
	modelDir string            // config.json, weights, tokenizer files
	adapters map[string]string // name → folder
}

func adapterName(i int) string { return fmt.Sprintf("lora%02d", i) }

// serveFixture builds the model folder and the adapters once per test run.
func serveFixture(t *testing.T) fixture {
	t.Helper()
	testutil.Fixtures(t, "llama-tiny")
	modelDir, adapters, err := TestingFixture()
	if err != nil {
		t.Fatal(err)
	}
	return fixture{modelDir: modelDir, adapters: adapters}
}

// TestingFixture is the serving fixture for the Examples (package
// serve_test): the model folder and the adapters' folders by name.
func TestingFixture() (modelDir string, adapters map[string]string, err error) {
	fixtureOnce.Do(func() { fixtureDir, fixtureErr = buildFixture(filepath.Join("..", "testdata", "hf", "llama-tiny")) })
	if fixtureErr != nil {
		return "", nil, fixtureErr
	}
	adapters = map[string]string{}
	for i := 0; i < numAdapters; i++ {
		adapters[adapterName(i)] = filepath.Join(fixtureDir, "adapters", adapterName(i))
	}
	return filepath.Join(fixtureDir, "model"), adapters, nil
}

func buildFixture(src string) (string, error) {
	src, err := filepath.Abs(src)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "gopeft-serve-")
	if err != nil {
		return "", err
	}
	model := filepath.Join(dir, "model")
	if err := os.MkdirAll(model, 0o755); err != nil {
		return dir, err
	}
	for _, f := range []string{"config.json", "generation_config.json", "model.safetensors"} {
		if err := os.Symlink(filepath.Join(src, f), filepath.Join(model, f)); err != nil {
			return dir, err
		}
	}
	tj, err := tinyTokenizerJSON()
	if err != nil {
		return dir, err
	}
	if err := os.WriteFile(filepath.Join(model, "tokenizer.json"), []byte(tj), 0o644); err != nil {
		return dir, err
	}
	cfg, _ := json.Marshal(map[string]any{
		"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": 128,
		"chat_template": chatML,
	})
	if err := os.WriteFile(filepath.Join(model, "tokenizer_config.json"), cfg, 0o644); err != nil {
		return dir, err
	}
	base, err := llama.Load(model)
	if err != nil {
		return dir, err
	}
	defer base.Free()
	var pm *peft.Model
	for i := 0; i < numAdapters; i++ {
		peft.SetSeed(int64(1000 + i))
		c := &lora.Config{R: 4, LoraAlpha: 8, TargetModules: lora.List("q_proj", "v_proj", "down_proj"), InitLoraWeights: lora.Init{Value: "false"}}
		if pm == nil {
			if pm, err = peft.New(base, c); err != nil {
				return dir, err
			}
			continue
		}
		if err := pm.AddAdapter(adapterName(i), c); err != nil {
			return dir, err
		}
	}
	for i := 0; i < numAdapters; i++ {
		name := adapterName(i)
		if i == 0 {
			name = peft.DefaultAdapter
		}
		if err := pm.SaveAdapter(filepath.Join(dir, "adapters", adapterName(i)), name); err != nil {
			return dir, err
		}
	}
	return dir, nil
}

// loadServingModel loads the fixture's base with the first adapter (as
// peft serve does) and the tokenizer.
func loadServingModel(t testing.TB, f fixture) (*peft.Model, *tokenizer.Tokenizer) {
	t.Helper()
	base, err := llama.Load(f.modelDir)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := peft.Load(base, f.adapters[adapterName(0)], peft.WithAdapterName(adapterName(0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(base.Free)
	tok, err := tokenizer.Load(filepath.Join(f.modelDir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	return pm, tok
}

// bytesToUnicode is GPT-2's byte-level alphabet: printable bytes stand for
// themselves, the others for code points from 256 on.
func bytesToUnicode() [256]string {
	var out [256]string
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			out[b] = string(rune(b))
		} else {
			out[b] = string(rune(256 + n))
			n++
		}
	}
	return out
}

// tinyTokenizerJSON is a byte-level BPE of exactly 512 ids: <unk>, <s>,
// </s> (ids 0-2, as LLaMA's), the 256 bytes, merges of common English
// pairs, and the ChatML markers as special added tokens (510, 511).
func tinyTokenizerJSON() (string, error) {
	alpha := bytesToUnicode()
	vocab := map[string]int{"<unk>": 0, "<s>": 1, "</s>": 2}
	for b := 0; b < 256; b++ {
		vocab[alpha[b]] = 3 + b
	}
	pairs := []string{
		"Ġ t", "h e", "Ġt he", "i n", "e r", "a n", "o n", "r e", "Ġ a", "Ġ s", "e n", "o r", "Ġ w", "Ġ o",
		"a t", "Ġ b", "i s", "Ġ c", "l l", "e s", "o u", "Ġ h", "i t", "Ġ i", "Ġ f", "Ġ m", "Ġ d", "in g",
		"Ġ p", "e d", "a r", "Ġ l", "l o", "e l", "h el", "hel lo", "Ġ n", "Ġ g", "Ġ y", "Ġy ou", "o w",
		"Ġ in", "Ġ is", "Ġ an", "Ġan d", "Ġ re", "Ġ on", "Ġ he",
	}
	var merges []string
	next := 259
	for _, p := range pairs {
		a, b, _ := strings.Cut(p, " ")
		_, okA := vocab[a]
		_, okB := vocab[b]
		if !okA || !okB {
			return "", fmt.Errorf("tinyTokenizerJSON: merge %q uses a token not in the vocabulary yet", p)
		}
		if _, dup := vocab[a+b]; dup {
			continue
		}
		vocab[a+b] = next
		merges = append(merges, p)
		next++
	}
	vocab["<|im_start|>"] = 510
	vocab["<|im_end|>"] = 511
	keys := make([]string, 0, len(vocab))
	for k := range vocab {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return vocab[keys[i]] < vocab[keys[j]] })
	v := make([]string, len(keys))
	for i, k := range keys {
		kb, _ := json.Marshal(k)
		v[i] = fmt.Sprintf("%s: %d", kb, vocab[k])
	}
	ms, _ := json.Marshal(merges)
	added := func(id int, content string) string {
		return fmt.Sprintf(`{"id": %d, "content": %q, "special": true, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false}`, id, content)
	}
	return `{"version": "1.0", "added_tokens": [` + strings.Join([]string{added(0, "<unk>"), added(1, "<s>"), added(2, "</s>"),
		added(510, "<|im_start|>"), added(511, "<|im_end|>")}, ", ") + `],
 "normalizer": null,
 "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
 "post_processor": null,
 "decoder": {"type": "ByteLevel"},
 "model": {"type": "BPE", "vocab": {` + strings.Join(v, ", ") + `}, "merges": ` + string(ms) + `}}`, nil
}
