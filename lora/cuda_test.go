package lora_test

import (
	"context"
	"io"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

// TestCUDAWhereLibtorchHasIt runs the fixture on cuda:0 when libtorch
// reports a GPU: LoRA logits equal the CPU's, every parameter (adapters
// and optimizer state included) stays on the device through a Trainer
// run with checkpointing, and greedy generation gives the CPU's tokens.
// With a CPU-only libtorch (Debian's, CI's) it checks instead that asking
// for cuda fails up front, naming the option and what to do.
func TestCUDAWhereLibtorchHasIt(t *testing.T) {
	fx := fixtures(t)
	dir := filepath.Join(fx, "llama-tiny")
	if tensor.CUDADeviceCount() == 0 {
		_, err := llama.Load(dir, models.WithDevice("cuda"))
		require.ErrorContains(t, err, "device cuda:0: this libtorch has no CUDA support")
		require.ErrorContains(t, err, "LIBTORCH=")
		t.Log("libtorch has no CUDA here: checked the error path only")
		return
	}
	e := openExpected(t, "lora-rich")
	adapter := filepath.Join(fx, "adapters", "llama-tiny", "lora-rich")
	load := func(dev string) *peft.Model {
		base, err := llama.Load(dir, models.WithDevice(dev))
		require.NoError(t, err)
		pm, err := peft.Load(base, adapter, peft.Trainable())
		require.NoError(t, err)
		return pm
	}
	cpu, gpu := load("cpu"), load("cuda")
	for _, np := range nn.NamedParams(gpu) {
		require.Equal(t, tensor.CUDA(0), np.Param.T().Device(), np.Name)
	}
	require.LessOrEqual(t, maxDiff(logitsOf(t, gpu, e), e.f32(t, "logits")), 1e-4)

	ids, _ := e.i64(t, "input_ids")
	prompt := [][]int64{ids[:6]}
	gen := func(m *peft.Model) [][]int64 {
		out, err := generate.Generate(context.Background(), m, generate.Input{InputIDs: prompt}, generate.GenerationConfig{MaxNewTokens: 8})
		require.NoError(t, err)
		return out.Sequences
	}
	require.Equal(t, gen(cpu), gen(gpu))

	var recs []data.Instruction
	for i := 0; i < 8; i++ {
		recs = append(recs, data.Instruction{Instruction: "Repeat.", Input: "ab", Output: "ab"})
	}
	tmpl, _ := data.TemplateByName("alpaca")
	ds, err := data.Instructions(byteTok{}, recs, data.Options{Template: tmpl, MaxLength: 64})
	require.NoError(t, err)
	pm := gpu // the adapter loaded trainable
	tr := train.New(pm, train.Config{LR: 1e-2, BatchSize: 4, MaxSteps: 3, Checkpointing: true, Progress: io.Discard})
	require.NoError(t, tr.Fit(ds, nil))
	for _, np := range nn.NamedParams(pm) {
		require.Equal(t, tensor.CUDA(0), np.Param.T().Device(), np.Name)
	}
}

type byteTok struct{}

func (byteTok) Encode(text string, _ bool) ([]int, error) {
	ids := make([]int, len(text))
	for i := range text {
		ids[i] = 100 + int(text[i])
	}
	return ids, nil
}

func (byteTok) SpecialTokens() data.SpecialTokens { return data.SpecialTokens{BOS: 1, EOS: 2, PAD: 0} }
