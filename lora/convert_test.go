package lora_test

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// perturb adds 0.05·N(0, 1) to every trainable parameter (a stand-in for
// training).
func perturb(t testing.TB, m *peft.Model) {
	s := tensor.NoGradScope()
	defer s.Close()
	for _, np := range m.TrainableParams() {
		p := np.Param.T()
		s.CopyInto(p, s.Add(p, s.MulScalar(s.Randn(p.DType(), p.Shape()...), 0.05)))
	}
	require.NoError(t, s.Err())
}

// A PiSSA/OLoRA adapter, trained, saved as a plain LoRA against its initial
// state: on the untouched base it gives the logits of the trained model,
// which runs on the rewritten base.
func TestSaveConvertedOnOriginalBase(t *testing.T) {
	cases := []struct {
		name  string
		cfg   *lora.Config
		alpha float64
	}{
		{"pissa", &lora.Config{R: 4, LoraAlpha: 8, InitLoraWeights: lora.Init{Value: "pissa"}, TargetModules: lora.List("q_proj", "v_proj", "down_proj")}, 16},
		{"olora-rslora", &lora.Config{R: 2, LoraAlpha: 4, UseRSLoRA: true, InitLoraWeights: lora.Init{Value: "olora"}, TargetModules: lora.List("o_proj")}, 4 * math.Sqrt2},
		{"pissa-niter-rank-pattern", &lora.Config{R: 4, LoraAlpha: 8, InitLoraWeights: lora.Init{Value: "pissa_niter_2"},
			TargetModules: lora.List("q_proj", "v_proj"), RankPattern: lora.OrderedMap{Keys: []string{"v_proj"}, Values: map[string]float64{"v_proj": 2}}}, 16},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fx := fixtures(t)
			e := testutil.OpenExpected(t, "llama-tiny__lora-pissa") // for its inputs
			base, err := llama.Load(filepath.Join(fx, "llama-tiny"))
			require.NoError(t, err)
			m, err := lora.Wrap(base, c.cfg)
			require.NoError(t, err)
			defer nn.FreeParams(m)
			// PiSSA/OLoRA start where the base was
			testutil.RequireLogits(t, m, e, "logits_base", 1e-4)
			initDir := filepath.Join(t.TempDir(), "init")
			require.NoError(t, m.Save(initDir))
			perturb(t, m)
			trained, _ := testutil.LogitsOf(t, m, e)
			require.Greater(t, testutil.MaxDiff(trained, e.F32(t, "logits_base")), 1e-3)

			conv := filepath.Join(t.TempDir(), "converted")
			require.NoError(t, lora.SaveConverted(m, conv, peft.DefaultAdapter, initDir))
			js := testutil.ReadJSON(t, filepath.Join(conv, "adapter_config.json"))
			require.Equal(t, true, js["init_lora_weights"])
			require.EqualValues(t, 2*c.cfg.R, js["r"])
			require.InDelta(t, c.alpha, js["lora_alpha"], 1e-12)

			fresh, err := llama.Load(filepath.Join(fx, "llama-tiny"))
			require.NoError(t, err)
			lm, err := peft.Load(fresh, conv)
			require.NoError(t, err)
			defer nn.FreeParams(lm)
			got, _ := testutil.LogitsOf(t, lm, e)
			d := testutil.MaxDiff(got, trained)
			t.Logf("converted on the original base vs trained %s model: max abs diff %.3g", c.name, d)
			require.LessOrEqual(t, d, 1e-4)
			restore := lm.DisableAdapters()
			testutil.RequireLogits(t, lm, e, "logits_base", 1e-5) // the base was not touched
			restore()
		})
	}
}

func TestSaveConvertedErrors(t *testing.T) {
	fx := fixtures(t)
	base, err := llama.Load(filepath.Join(fx, "llama-tiny"))
	require.NoError(t, err)
	m, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 8, InitLoraWeights: lora.Init{Value: "pissa"}})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	dir := t.TempDir()
	err = lora.SaveConverted(m, filepath.Join(dir, "out"), "default", filepath.Join(dir, "nowhere"))
	require.ErrorContains(t, err, "initial adapter")
	require.ErrorContains(t, lora.SaveConverted(m, dir, "other", dir), `no adapter "other"`)

	// an initial adapter of another rank
	other, err := llama.Load(filepath.Join(fx, "llama-tiny"))
	require.NoError(t, err)
	o, err := lora.Wrap(other, &lora.Config{R: 2, LoraAlpha: 8})
	require.NoError(t, err)
	defer nn.FreeParams(o)
	require.NoError(t, o.Save(filepath.Join(dir, "r2")))
	require.ErrorContains(t, lora.SaveConverted(m, filepath.Join(dir, "out"), "default", filepath.Join(dir, "r2")), "has shape [2 64]")
	_, err = os.Stat(filepath.Join(dir, "out", "adapter_config.json"))
	require.True(t, os.IsNotExist(err), "nothing written on error")

	require.NoError(t, m.AddAdapter("dora", &lora.Config{R: 2, UseDoRA: true, InitLoraWeights: lora.Init{Value: "pissa"}}))
	require.ErrorContains(t, lora.SaveConverted(m, dir, "dora", dir), "DoRA")
	require.NoError(t, m.AddAdapter("rs", &lora.Config{R: 2, UseRSLoRA: true, InitLoraWeights: lora.Init{Value: "olora"},
		AlphaPattern: lora.OrderedMap{Keys: []string{"q_proj"}, Values: map[string]float64{"q_proj": 4}}}))
	require.ErrorContains(t, lora.SaveConverted(m, dir, "rs", dir), "use_rslora")
}
