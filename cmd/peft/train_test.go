package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopeft/peft/internal/disttest"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

// asPeft makes the test binary act as the peft command (for the
// processes `peft train --nproc` and torchrun start).
const asPeft = "GOPEFT_TEST_AS_PEFT"

func TestMain(m *testing.M) {
	if os.Getenv(asPeft) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// trainModel is llama-tiny (linked) with a character tokenizer: printable
// ASCII at ids 4…98, <pad> <s> </s> <unk> at 0…3.
func trainModel(t *testing.T) string {
	dir := t.TempDir()
	fx := filepath.Join(fixtures(t), "llama-tiny")
	for _, f := range []string{"config.json", "model.safetensors", "generation_config.json"} {
		require.NoError(t, os.Symlink(filepath.Join(fx, f), filepath.Join(dir, f)))
	}
	vocab := map[string]int{"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
	var added []map[string]any
	for i, s := range []string{"<pad>", "<s>", "</s>", "<unk>"} {
		added = append(added, map[string]any{"id": i, "content": s, "special": true, "single_word": false,
			"lstrip": false, "rstrip": false, "normalized": false})
	}
	for c := 32; c < 127; c++ {
		vocab[string(rune(c))] = c - 28
	}
	tj, _ := json.Marshal(map[string]any{"version": "1.0", "added_tokens": added, "decoder": map[string]any{"type": "Fuse"},
		"model": map[string]any{"type": "BPE", "unk_token": "<unk>", "vocab": vocab, "merges": []string{}}})
	tc, _ := json.Marshal(map[string]any{"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"})
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer.json"), tj, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), tc, 0o644))
	return dir
}

// trainData writes an alpaca JSONL file (10 records) and a ShareGPT JSON
// file (3 conversations) and returns "alpaca, sharegpt".
func trainData(t *testing.T, dir string) string {
	var alpaca bytes.Buffer
	words := []string{"ab", "cde", "fghi", "jk", "lmnop"}
	for i := 0; i < 10; i++ {
		w := fmt.Sprint(words[i%len(words)], i)
		b, _ := json.Marshal(map[string]string{"instruction": "copy " + w, "output": w})
		alpaca.Write(append(b, '\n'))
	}
	a := filepath.Join(dir, "alpaca.jsonl")
	require.NoError(t, os.WriteFile(a, alpaca.Bytes(), 0o644))
	var convs []any
	for i := 0; i < 3; i++ {
		convs = append(convs, map[string]any{"conversations": []map[string]string{
			{"from": "human", "value": fmt.Sprint("reverse ", words[i])}, {"from": "gpt", "value": words[i+1]}}})
	}
	sg, _ := json.Marshal(convs)
	s := filepath.Join(dir, "sharegpt.json")
	require.NoError(t, os.WriteFile(s, sg, 0o644))
	return a + ", " + s
}

// trainYAML is a LoRA run of 3 steps (13 samples: the last step's global
// batch is short) with dropout off, plus two keys the library ignores.
func trainYAML(t *testing.T, dir, model, dataset, out string, perDevice int) string {
	y := fmt.Sprintf(`### model
model_name_or_path: %s
trust_remote_code: true
### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 4
lora_target: q_proj,v_proj
### dataset
dataset: %s
template: alpaca
cutoff_len: 64
### train
per_device_train_batch_size: %d
gradient_accumulation_steps: 2
learning_rate: 1.0e-2
lr_scheduler_type: cosine
warmup_ratio: 0.1
num_train_epochs: 1.0
logging_steps: 1
save_steps: 2
max_grad_norm: 1.0
seed: 7
bf16: false
plot_loss: true
output_dir: %s
report_to: none
`, model, dataset, perDevice, out)
	p := filepath.Join(dir, fmt.Sprintf("cfg-%d.yaml", perDevice))
	require.NoError(t, os.WriteFile(p, []byte(y), 0o644))
	return p
}

func TestTrainConfigErrors(t *testing.T) {
	base := "model_name_or_path: m\ndataset: d.json\noutput_dir: o\n"
	cases := map[string]string{
		"learning_rate: fast\n":                            "cfg.yaml:4: learning_rate: want a number",
		"lora_dropout: 1.5\n":                              "cfg.yaml:4: lora_dropout: must be in [0, 0.999]",
		"finetuning_type: qlora\n":                         `finetuning_type: "qlora" is not supported (lora, freeze, full, ia3`,
		"template: vicuna\n":                               `template: "vicuna" is not supported`,
		"lr_scheduler_type: polynomial\n":                  `lr_scheduler_type: "polynomial" is not supported`,
		"per_device_train_batch_size: 0\n":                 "per_device_train_batch_size: must be at least 1",
		"per_device_train_batch_size: 2.5\n":               "per_device_train_batch_size: want an integer",
		"bf16: maybe\n":                                    "bf16: want true or false",
		"stage: dpo\n":                                     `stage: peft train does sft only, got "dpo"`,
		"finetuning_type: prompt_tuning\n":                 "num_virtual_tokens: finetuning_type prompt_tuning needs num_virtual_tokens",
		"lora_target: {q: 1}\n":                            "lora_target: want a value, got a mapping",
		"max_steps: 0\n":                                   "max_steps: must be positive, or -1",
		"seed: x\n":                                        "seed: want an integer",
		"bf16: true\nfp16: true\n":                         "fp16: bf16 and fp16 are both true",
		"loraplus_lr_ratio: 0\n":                           "loraplus_lr_ratio: must be in",
		"loraplus_lr_ratio: 16\nfinetuning_type: freeze\n": `loraplus_lr_ratio: LoRA+ needs finetuning_type lora, not "freeze"`,
		"loraplus_lr_embedding: 1.0e-5\n":                  "loraplus_lr_embedding: is set without loraplus_lr_ratio",
	}
	for extra, want := range cases {
		_, _, err := parseTrainConfig("cfg.yaml", []byte(base+extra))
		require.Error(t, err, extra)
		require.Contains(t, err.Error(), want, extra)
	}
	_, _, err := parseTrainConfig("cfg.yaml", []byte("dataset: d.json\noutput_dir: o\n"))
	require.ErrorContains(t, err, "cfg.yaml: model_name_or_path: required")
	_, _, err = parseTrainConfig("cfg.yaml", []byte("- a\n- b\n"))
	require.ErrorContains(t, err, "cfg.yaml: want a mapping")

	c, unknown, err := parseTrainConfig("cfg.yaml", []byte(base+"zeta: 1\nalpha_x: 2\nlora_rank: 16\ndataset_dir: data\n"))
	require.NoError(t, err)
	require.Equal(t, []string{"alpha_x", "dataset_dir", "zeta"}, unknown)
	require.Equal(t, 32.0, c.LoraAlpha) // LLaMA-Factory: 2 × lora_rank
	require.Equal(t, []string{"d.json"}, c.Dataset)
	require.Equal(t, 8, c.BatchSize) // HF's defaults
	require.Equal(t, 5e-5, c.LR)

	c, _, err = parseTrainConfig("cfg.yaml", []byte(base+"loraplus_lr_ratio: 16\nloraplus_lr_embedding: 1.0e-5\n"))
	require.NoError(t, err)
	require.Equal(t, 16.0, c.LoraPlusLRRatio)
	require.Equal(t, 1e-5, c.LoraPlusLREmbedding)
}

// peft train on one process: the adapter, checkpoints and metrics.jsonl in
// output_dir, the unknown keys in one warning.
func TestTrainCommand(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	cfg := trainYAML(t, dir, trainModel(t), trainData(t, dir), out, 4)
	var stderr bytes.Buffer
	require.NoError(t, run([]string{"train", cfg}, &bytes.Buffer{}, &stderr), stderr.String())
	require.Equal(t, 1, strings.Count(stderr.String(), "warning"), stderr.String())
	require.Contains(t, stderr.String(), "ignoring keys this library does not support: report_to, trust_remote_code")
	var ac map[string]any
	b, err := os.ReadFile(filepath.Join(out, "adapter_config.json"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, &ac))
	require.Equal(t, "LORA", ac["peft_type"])
	require.Equal(t, 4.0, ac["r"])
	require.Equal(t, 8.0, ac["lora_alpha"])
	require.ElementsMatch(t, []any{"q_proj", "v_proj"}, ac["target_modules"])
	// 13 samples, 4 × 2 per step: 2 steps per epoch
	recs := metrics(t, out)
	require.Len(t, recs, 2)
	for _, d := range []string{"checkpoint-2", "adapter_model.safetensors", "curves.svg", "curves.png"} { // plot_loss
		_, err := os.Stat(filepath.Join(out, d))
		require.NoError(t, err)
	}
	// a second epoch, resumed from the latest checkpoint: steps 3 and 4
	// follow the first run's records
	y, err := os.ReadFile(cfg)
	require.NoError(t, err)
	y = bytes.Replace(y, []byte("num_train_epochs: 1.0"), []byte("num_train_epochs: 2\nresume_from_checkpoint: true"), 1)
	require.NoError(t, os.WriteFile(cfg, y, 0o644))
	require.NoError(t, run([]string{"train", cfg}, &bytes.Buffer{}, &stderr), stderr.String())
	again := metrics(t, out)
	require.Len(t, again, 4)
	require.Equal(t, recs, again[:2])
	require.Equal(t, 4, again[3].Step)
}

func metrics(t *testing.T, out string) []train.Record {
	f, err := os.Open(filepath.Join(out, train.MetricsFile))
	require.NoError(t, err)
	defer f.Close()
	var recs []train.Record
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r train.Record
		require.NoError(t, json.Unmarshal(sc.Bytes(), &r))
		recs = append(recs, r)
	}
	return recs
}

// maxAdapterDiff is the largest difference between two adapters' weights.
func maxAdapterDiff(t *testing.T, a, b string) float64 {
	fa, err := safetensors.OpenFiles(filepath.Join(a, "adapter_model.safetensors"))
	require.NoError(t, err)
	defer fa.Close()
	fb, err := safetensors.OpenFiles(filepath.Join(b, "adapter_model.safetensors"))
	require.NoError(t, err)
	defer fb.Close()
	require.Equal(t, fa.Names(), fb.Names())
	d := 0.0
	for _, n := range fa.Names() {
		da, _ := fa.Data(n)
		db, _ := fb.Data(n)
		va, vb := safetensors.Float32s(da), safetensors.Float32s(db)
		require.Len(t, vb, len(va))
		for i := range va {
			d = math.Max(d, math.Abs(float64(va[i]-vb[i])))
		}
	}
	return d
}

// Issue #17: `peft train --nproc 2` and `torchrun --no_python
// --nproc_per_node 2 peft train` with per_device_train_batch_size 2 save
// the adapter of one process with 4 (within 1e-5), and the same losses.
func TestTrainDataParallel(t *testing.T) {
	dir := t.TempDir()
	model, dataset := trainModel(t), trainData(t, dir)
	single := filepath.Join(dir, "single")
	var stderr bytes.Buffer
	require.NoError(t, run([]string{"train", trainYAML(t, dir, model, dataset, single, 4)}, &bytes.Buffer{}, &stderr), stderr.String())
	want := metrics(t, single)

	t.Setenv(asPeft, "1")
	t.Setenv("GOPEFT_DIST_TIMEOUT", "120s")
	selfExe = func() (string, error) { return os.Args[0], nil }
	t.Cleanup(func() { selfExe = os.Executable })
	check := func(name, out string) {
		d := maxAdapterDiff(t, single, out)
		t.Logf("%s: max adapter difference to one process %.3g", name, d)
		require.LessOrEqual(t, d, 1e-5, name)
		got := metrics(t, out)
		require.Len(t, got, len(want), name)
		for i := range want {
			require.InDelta(t, *want[i].Loss, *got[i].Loss, 1e-5, "%s step %d", name, i+1)
		}
	}

	nproc := filepath.Join(dir, "nproc")
	stderr.Reset()
	require.NoError(t, run([]string{"train", "--nproc", "2", trainYAML(t, dir, model, dataset, nproc, 2)}, &bytes.Buffer{}, &stderr), stderr.String())
	require.Equal(t, 1, strings.Count(stderr.String(), "warning"), "rank 0 alone warns:\n%s", stderr.String())
	check("--nproc 2", nproc)

	// torch 1.13's torchrun spells its flags with underscores; on Python
	// 3.11 it needs explicit --redirects/--tee (its default "0" fails)
	tr := filepath.Join(dir, "torchrun")
	cmd := exec.Command("torchrun", "--no_python", "--nproc_per_node", "2", "--master_port", fmt.Sprint(disttest.FreePort(t)),
		"--redirects", "2", "--tee", "2", os.Args[0], "train", trainYAML(t, dir, model, dataset, tr, 2))
	cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1")
	done := make(chan struct{})
	var outb []byte
	var err error
	go func() { outb, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatal("torchrun did not finish in 5 minutes")
	}
	require.NoError(t, err, "torchrun (python3-torch) is needed: %s", outb)
	check("torchrun", tr)
}

// Every finetuning_type trains a step and saves what PEFT (or, for full
// fine-tuning, transformers) would.
func TestTrainMethods(t *testing.T) {
	dir := t.TempDir()
	model, dataset := trainModel(t), trainData(t, dir)
	want := map[string]string{"freeze": "FREEZE", "ia3": "IA3", "prompt_tuning": "PROMPT_TUNING",
		"p_tuning": "P_TUNING", "prefix_tuning": "PREFIX_TUNING", "bottleneck": "BOTTLENECK", "bitfit": "BITFIT",
		"LORA": "LORA", "full": ""}
	// llama-tiny has no biases: BitFit says so
	noBias := "finetuning_type bitfit: bitfit: the model has no bias parameters"
	for method, peftType := range want {
		out := filepath.Join(dir, method)
		y := fmt.Sprintf("model_name_or_path: %s\ndataset: %s\noutput_dir: %s\nfinetuning_type: %s\n"+
			"num_virtual_tokens: 4\nfreeze_trainable_layers: 1\nmax_steps: 1\nper_device_train_batch_size: 4\n",
			model, dataset, out, method)
		cfg := filepath.Join(dir, method+".yaml")
		require.NoError(t, os.WriteFile(cfg, []byte(y), 0o644))
		var stderr bytes.Buffer
		err := run([]string{"train", cfg}, &bytes.Buffer{}, &stderr)
		if method == "bitfit" {
			require.ErrorContains(t, err, noBias)
			continue
		}
		require.NoError(t, err, "%s: %s", method, stderr.String())
		require.Len(t, metrics(t, out), 1, method)
		if peftType == "" {
			_, err := os.Stat(filepath.Join(out, "model.safetensors"))
			require.NoError(t, err, method)
			continue
		}
		b, err := os.ReadFile(filepath.Join(out, "adapter_config.json"))
		require.NoError(t, err, method)
		var ac map[string]any
		require.NoError(t, json.Unmarshal(b, &ac))
		require.Equal(t, peftType, ac["peft_type"], method)
	}
}

// A rank that fails fails `peft train --nproc`, its output prefixed.
func TestTrainNprocFailure(t *testing.T) {
	dir := t.TempDir()
	cfg := trainYAML(t, dir, trainModel(t), filepath.Join(dir, "missing.jsonl"), filepath.Join(dir, "out"), 2)
	t.Setenv(asPeft, "1")
	selfExe = func() (string, error) { return os.Args[0], nil }
	t.Cleanup(func() { selfExe = os.Executable })
	var stderr bytes.Buffer
	err := run([]string{"train", "--nproc", "2", cfg}, &bytes.Buffer{}, &stderr)
	require.ErrorContains(t, err, "of 2 failed: exit status 1")
	require.Contains(t, stderr.String(), "[rank 1] peft: train: dataset: open "+filepath.Join(dir, "missing.jsonl"))
	err = run([]string{"train", "--nproc", "0", cfg}, &bytes.Buffer{}, &stderr)
	require.ErrorContains(t, err, "--nproc 0: want at least 1")
	t.Setenv("WORLD_SIZE", "2")
	t.Setenv("RANK", "0")
	t.Setenv("MASTER_ADDR", "127.0.0.1")
	t.Setenv("MASTER_PORT", "1")
	err = run([]string{"train", "--nproc", "2", cfg}, &bytes.Buffer{}, &stderr)
	require.ErrorContains(t, err, "WORLD_SIZE=2 is set: a launcher already started this process")
}
