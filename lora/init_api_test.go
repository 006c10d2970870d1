package lora_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/gpt2"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/nn/quant"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

var initIDs = []int64{4, 8, 15, 16, 23, 42, 7, 99, 5, 17, 33, 2, 61, 8, 15, 16}

func initBatch(s *tensor.Scope) *models.Batch {
	x := s.FromInt64(initIDs, 2, 8)
	return &models.Batch{InputIDs: x, Labels: x}
}

// Every data init on GPT-2's Conv1D (weights stored [in, out]): the
// adapter has LoRA's shapes, PiSSA/OLoRA start at the base model's logits,
// LoftQ near them, and a saved adapter loads back to the same logits (the
// init re-run on a fresh base, then the saved A and B).
func TestDataInitConv1D(t *testing.T) {
	dir := filepath.Join(fixtures(t), "gpt2-tiny")
	for _, init := range []string{"pissa", "pissa_niter_3", "olora", "loftq"} {
		t.Run(init, func(t *testing.T) {
			base, err := gpt2.Load(dir)
			require.NoError(t, err)
			want := testutil.IDsLogits(t, base, initIDs, 2)
			m, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 8, InitLoraWeights: lora.Init{Value: init},
				LoftQConfig: &lora.LoftQConfig{LoftQBits: 4, LoftQIter: 2}})
			require.NoError(t, err)
			defer nn.FreeParams(m)
			var a, b []int64
			for _, np := range nn.NamedParams(m) {
				if strings.HasSuffix(np.Name, "h.0.attn.c_attn.lora_A.default.weight") {
					a = np.Param.Shape()
				}
				if strings.HasSuffix(np.Name, "h.0.attn.c_attn.lora_B.default.weight") {
					b = np.Param.Shape()
				}
			}
			require.Equal(t, []int64{4, 64}, a)
			require.Equal(t, []int64{192, 4}, b)
			got := testutil.IDsLogits(t, m, initIDs, 2)
			d := testutil.MaxDiff(got, want)
			t.Logf("%s: initial logits vs base: %.3g", init, d)
			if init == "loftq" {
				require.Greater(t, d, 1e-6) // the quantised base is not the base
				require.Less(t, d, 0.5)
			} else {
				require.LessOrEqual(t, d, 1e-4)
			}
			perturb(t, m)
			trained := testutil.IDsLogits(t, m, initIDs, 2)
			saved := t.TempDir()
			require.NoError(t, m.Save(saved))
			fresh, err := gpt2.Load(dir)
			require.NoError(t, err)
			l, err := peft.Load(fresh, saved)
			require.NoError(t, err)
			defer nn.FreeParams(l)
			if init == "pissa_niter_3" { // randomized: the re-run init gives another residual
				return
			}
			require.LessOrEqual(t, testutil.MaxDiff(testutil.IDsLogits(t, l, initIDs, 2), trained), 1e-4)
		})
	}
}

// pissa_niter_N keeps W = W_res + s·B·A exactly (the model starts at the
// base's logits) whatever the random start.
func TestPiSSANiterStartsAtBase(t *testing.T) {
	base, err := llama.Load(filepath.Join(fixtures(t), "llama-tiny"))
	require.NoError(t, err)
	want := testutil.IDsLogits(t, base, initIDs, 2)
	m, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 16, InitLoraWeights: lora.Init{Value: "pissa_niter_2"},
		TargetModules: lora.List("q_proj", "v_proj", "gate_proj")})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.LessOrEqual(t, testutil.MaxDiff(testutil.IDsLogits(t, m, initIDs, 2), want), 1e-4)
	restore := m.DisableAdapters()
	require.Greater(t, testutil.MaxDiff(testutil.IDsLogits(t, m, initIDs, 2), want), 1e-3, "the base holds the residual")
	restore()
}

// A PiSSA adapter trains like any LoRA: only A and B change, the loss goes
// down.
func TestPiSSATrains(t *testing.T) {
	base, err := llama.Load(filepath.Join(fixtures(t), "llama-tiny"))
	require.NoError(t, err)
	m, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 8, InitLoraWeights: lora.Init{Value: "pissa"}})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	before := testutil.Snapshot(t, m)
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: 1e-2})
	defer opt.Free()
	losses := testutil.TrainSteps(t, m, opt.Step, initBatch, 6)
	require.Less(t, losses[len(losses)-1], losses[0])
	n := testutil.RequireOnlyTrainedChanged(t, before, testutil.Snapshot(t, m), func(name string) bool {
		return strings.Contains(name, ".lora_A.") || strings.Contains(name, ".lora_B.")
	})
	require.Equal(t, 8, n)
}

func TestDataInitErrors(t *testing.T) {
	fx := fixtures(t)
	load := func() *llama.Model {
		m, err := llama.Load(filepath.Join(fx, "llama-tiny"))
		require.NoError(t, err)
		return m
	}
	_, err := lora.Wrap(load(), &lora.Config{R: 40, InitLoraWeights: lora.Init{Value: "pissa"}})
	require.ErrorContains(t, err, "r <= min(out, in) = 32")
	_, err = lora.Wrap(load(), &lora.Config{R: 4, InitLoraWeights: lora.Init{Value: "loftq"}, TargetModules: lora.List("embed_tokens")})
	require.ErrorContains(t, err, `"loftq" on an Embedding`)
	_, err = lora.Wrap(load(), &lora.Config{R: 4, InitLoraWeights: lora.Init{Value: "loftq"}, LoftQConfig: &lora.LoftQConfig{LoftQBits: 3}})
	require.ErrorContains(t, err, "loftq_bits must be 2, 4 or 8")
	q, err := llama.LoadQuantized(filepath.Join(fx, "llama-tiny"), quant.Config{})
	require.NoError(t, err)
	_, err = lora.Wrap(q, &lora.Config{R: 4, InitLoraWeights: lora.Init{Value: "olora"}})
	require.ErrorContains(t, err, "4-bit base")
	// pissa/olora on an Embedding: PEFT's usual embedding init
	m, err := lora.Wrap(load(), &lora.Config{R: 4, InitLoraWeights: lora.Init{Value: "pissa"}, TargetModules: lora.List("embed_tokens")})
	require.NoError(t, err)
	nn.FreeParams(m)

	for js, want := range map[string]string{
		`{"peft_type": "LORA", "r": 4, "init_lora_weights": "pissa_niter_x"}`:                             `"pissa_niter_x"`,
		`{"peft_type": "LORA", "r": 4, "init_lora_weights": "corda"}`:                                     `"init_lora_weights": corda is not supported`,
		`{"peft_type": "LORA", "r": 4, "init_lora_weights": "loftq", "loftq_config": {"loftq_iter": -1}}`: `loftq_iter must be positive`,
	} {
		_, err := peft.ParseConfig("adapter_config.json", []byte(js))
		require.ErrorContains(t, err, want, js)
	}
}

// DoRA on a PiSSA init: the magnitude is ‖W_res + s·B·A‖ = ‖W‖ per row, so
// the model starts at the base's logits (PEFT's dora_init runs after the
// init too).
func TestPiSSAWithDoRAStartsAtBase(t *testing.T) {
	base, err := llama.Load(filepath.Join(fixtures(t), "llama-tiny"))
	require.NoError(t, err)
	want := testutil.IDsLogits(t, base, initIDs, 2)
	m, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 8, UseDoRA: true, InitLoraWeights: lora.Init{Value: "pissa"}})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.LessOrEqual(t, testutil.MaxDiff(testutil.IDsLogits(t, m, initIDs, 2), want), 1e-4)
}
