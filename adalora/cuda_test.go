package adalora_test

import (
	"testing"

	"github.com/gopeft/peft/adalora"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

// TestAdaLoRACUDA runs the fixture on cuda:0 when libtorch reports a GPU:
// the cut adapter loads onto the device with PEFT's logits, and the
// allocator (sensitivities, masks, resize on reload) works on device
// tensors through 8 steps with the fixture's budget. With a CPU-only
// libtorch it checks that asking for cuda fails up front.
func TestAdaLoRACUDA(t *testing.T) {
	dir := testutil.Fixtures(t, "llama-tiny")
	if tensor.CUDADeviceCount() == 0 {
		_, err := llama.Load(dir, models.WithDevice("cuda"))
		require.ErrorContains(t, err, "this libtorch has no CUDA support")
		t.Log("libtorch has no CUDA here: checked the error path only")
		return
	}
	e := testutil.OpenExpected(t, fixture)
	base, err := llama.Load(dir, models.WithDevice("cuda"))
	require.NoError(t, err)
	t.Cleanup(base.Free)
	m, err := peft.Load(base, adapterDir(t))
	require.NoError(t, err)
	for _, np := range nn.NamedParams(m) {
		require.Equal(t, tensor.CUDA(0), np.Param.T().Device(), np.Name)
	}
	testutil.RequireLogits(t, m, e, "logits", 1e-4)

	gbase, err := llama.Load(dir, models.WithDevice("cuda"))
	require.NoError(t, err)
	t.Cleanup(gbase.Free)
	cfg := fixtureConfig(t)
	cfg.RankPattern = nil
	g, err := adalora.Wrap(gbase, cfg)
	require.NoError(t, err)
	opt := train.NewAdamW(g.TrainableParams(), train.AdamWConfig{LR: 1e-2})
	defer opt.Free()
	budgets := []int64{36, 36, 27, 21, 19, 18, 18, 18}
	for step := 0; step < *cfg.TotalStep; step++ {
		s := tensor.NewScope()
		out := g.ForwardT(s, fixtureBatch(t, s, e, true))
		s.Backward(out.Loss)
		require.NoError(t, s.Err())
		s.Close()
		require.NoError(t, opt.Step())
		require.NoError(t, g.AfterOptimizerStep(step))
		require.NoError(t, opt.ZeroGrad())
		require.Equal(t, budgets[step], sum(keptRanks(t, g)), "step %d", step)
	}
	for _, np := range nn.NamedParams(g) {
		require.Equal(t, tensor.CUDA(0), np.Param.T().Device(), np.Name)
	}
	dirOut := t.TempDir()
	require.NoError(t, g.Save(dirOut))
	rbase, err := llama.Load(dir, models.WithDevice("cuda"))
	require.NoError(t, err)
	t.Cleanup(rbase.Free)
	r, err := peft.Load(rbase, dirOut)
	require.NoError(t, err)
	a, _ := testutil.LogitsOf(t, g, e)
	b, _ := testutil.LogitsOf(t, r, e)
	require.LessOrEqual(t, testutil.MaxDiff(a, b), 1e-4)
}
