package adalora_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gopeft/peft/adalora"
	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

const fixture = "llama-tiny__adalora"

func loadLlama(t testing.TB) *llama.Model { return testutil.Load(t, llama.Load, "llama-tiny") }

func adapterDir(t testing.TB) string {
	return testutil.Fixtures(t, "adapters", "llama-tiny", "adalora")
}

// fixtureBatch is the golden file's inputs (and labels when withLabels).
func fixtureBatch(t testing.TB, s *tensor.Scope, e *testutil.Expected, withLabels bool) *models.Batch {
	ids, shape := e.I64(t, "input_ids")
	mask, _ := e.I64(t, "attention_mask")
	b := &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...)}
	if withLabels {
		labels, _ := e.I64(t, "labels")
		b.Labels = s.FromInt64(labels, shape...)
	}
	return b
}

// llama-tiny__adalora (PEFT 0.10): the shipped adapter (cut to its
// rank_pattern) loads to PEFT's adapted, disabled and merged logits, and
// merged weights; unmerge restores.
func TestAdaLoRAFixtureLogits(t *testing.T) {
	e := testutil.OpenExpected(t, fixture)
	m, err := peft.Load(loadLlama(t), adapterDir(t))
	require.NoError(t, err)

	// the layers were resized to the pattern; ranknum stays init_r
	cfg, _ := m.Config(peft.DefaultAdapter)
	kept := cfg.(*adalora.Config).KeptRanks()
	n := 0
	for _, at := range peft.Tuners(m.Base()) {
		l := at.Tuner.(*adalora.SVDLinear)
		require.Equal(t, kept[at.Path], l.Rank(peft.DefaultAdapter), at.Path)
		rn, _ := l.Ranknum.Get(peft.DefaultAdapter)
		s := tensor.NoGradScope()
		require.Equal(t, float32(6), s.Float32s(rn.T())[0])
		s.Close()
		n += kept[at.Path]
	}
	require.Equal(t, 18, n)

	testutil.RequireLogits(t, m, e, "logits", 1e-4)
	restore := m.DisableAdapters()
	testutil.RequireLogits(t, m, e, "logits_disabled", 1e-4)
	testutil.RequireLogits(t, m, e, "logits_base", 1e-4)
	restore()

	require.NoError(t, m.Merge(false))
	testutil.RequireLogits(t, m, e, "logits_merged", 1e-4)
	require.NoError(t, m.Unmerge())
	testutil.RequireLogits(t, m, e, "logits", 1e-4)

	merged, err := m.MergeAndUnload()
	require.NoError(t, err)
	testutil.RequireLogits(t, merged, e, "logits_merged", 1e-4)
	require.Equal(t, 3, testutil.RequireMergedParams(t, merged, e.Set))
	for _, np := range nn.NamedParams(merged) {
		require.NotContains(t, np.Name, "lora_")
	}
}

// The loss with labels carries the orthogonal regulariser (PEFT's
// AdaLoraModel.forward): both the term and the total match the fixture's.
func TestAdaLoRAFixtureOrthReg(t *testing.T) {
	e := testutil.OpenExpected(t, fixture)
	m, err := peft.Load(loadLlama(t), adapterDir(t), peft.Trainable())
	require.NoError(t, err)
	s := tensor.NoGradScope()
	defer s.Close()
	reg := s.Item(adalora.OrthReg(s, m.Base(), peft.DefaultAdapter))
	require.NoError(t, s.Err())
	want := float64(e.F32(t, "adalora_orth_reg")[0])
	t.Logf("orth_reg %.7f, PEFT %.7f", reg, want)
	require.InDelta(t, want, reg, 1e-5)

	out := m.ForwardT(s, fixtureBatch(t, s, e, true))
	require.NoError(t, s.Err())
	loss := s.Item(out.Loss)
	wantLoss := float64(e.F32(t, "adalora_loss_with_orth_reg")[0])
	t.Logf("loss %.7f, PEFT %.7f", loss, wantLoss)
	require.InDelta(t, wantLoss, loss, 1e-5)

	// the public Forward adds it too; the base alone does not
	ids, shape := e.I64(t, "input_ids")
	mask, _ := e.I64(t, "attention_mask")
	labels, _ := e.I64(t, "labels")
	in := models.Inputs{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...), Labels: s.FromInt64(labels, shape...)}
	o2, err := m.Forward(s, in)
	require.NoError(t, err)
	require.InDelta(t, wantLoss, s.Item(o2.Loss), 1e-5)
	o3, err := m.Base().Forward(s, in)
	require.NoError(t, err)
	require.InDelta(t, wantLoss-0.5*want, s.Item(o3.Loss), 1e-5)
}

// A fresh adapter with the fixture's settings counts PEFT's trainable and
// total parameters (ranknum is a frozen parameter in PEFT too).
func TestAdaLoRATrainableCount(t *testing.T) {
	e := testutil.OpenExpected(t, fixture)
	cfg := fixtureConfig(t)
	cfg.RankPattern = nil
	m, err := adalora.Wrap(loadLlama(t), cfg)
	require.NoError(t, err)
	// PEFT 0.10 prints the percentage with every digit, this library with 4
	want, got := e.Meta(t, "print_trainable_parameters"), peft.TrainableSummary(m)
	cut := func(s string) string { return s[:strings.Index(s, "trainable%")] }
	require.Equal(t, cut(want), cut(got))
	require.Equal(t, "trainable params: 4,260 || all params: 143,850 || ", cut(got))
	for _, np := range m.TrainableParams() {
		require.Contains(t, np.Name, ".lora_")
	}
}

// fixtureConfig is the shipped adapter_config.json, decoded.
func fixtureConfig(t testing.TB) *adalora.Config {
	data, err := os.ReadFile(filepath.Join(adapterDir(t), peft.ConfigName))
	require.NoError(t, err)
	c, err := adalora.Decode(data)
	require.NoError(t, err)
	return c.(*adalora.Config)
}

// Save writes what PEFT wrote (same keys, shapes and bytes for the loaded
// adapter; the same config keys and values), and Load(Save(x)) is
// bit-identical.
func TestAdaLoRASaveRoundTrip(t *testing.T) {
	m, err := peft.Load(loadLlama(t), adapterDir(t))
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))

	requireSameTensors(t, filepath.Join(adapterDir(t), peft.WeightsName), filepath.Join(dir, peft.WeightsName))
	shipped := testutil.ReadJSON(t, filepath.Join(adapterDir(t), peft.ConfigName))
	saved := testutil.ReadJSON(t, filepath.Join(dir, peft.ConfigName))
	require.Equal(t, keys(shipped), keys(saved))
	for k, v := range shipped {
		require.Equal(t, v, saved[k], k)
	}

	m2, err := peft.Load(loadLlama(t), dir)
	require.NoError(t, err)
	dir2 := t.TempDir()
	require.NoError(t, m2.Save(dir2))
	requireSameTensors(t, filepath.Join(dir, peft.WeightsName), filepath.Join(dir2, peft.WeightsName))
	a, _ := os.ReadFile(filepath.Join(dir, peft.ConfigName))
	b, _ := os.ReadFile(filepath.Join(dir2, peft.ConfigName))
	require.Equal(t, string(a), string(b))
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// requireSameTensors asserts two safetensors files hold the same names,
// dtypes, shapes and bytes.
func requireSameTensors(t testing.TB, a, b string) {
	t.Helper()
	sa, err := safetensors.OpenFiles(a)
	require.NoError(t, err)
	defer sa.Close()
	sb, err := safetensors.OpenFiles(b)
	require.NoError(t, err)
	defer sb.Close()
	require.Equal(t, sa.Names(), sb.Names())
	for _, k := range sa.Names() {
		ia, _, _ := sa.Info(k)
		ib, _, _ := sb.Info(k)
		require.Equal(t, ia.DType, ib.DType, k)
		require.Equal(t, ia.Shape, ib.Shape, k)
		da, err := sa.Data(k)
		require.NoError(t, err)
		db, err := sb.Data(k)
		require.NoError(t, err)
		require.True(t, string(da) == string(db), "%s differs", k)
		require.True(t, strings.HasPrefix(k, peft.KeyPrefix), k)
	}
}

// The rank allocator's budget schedule equals PEFT's trace for the
// fixture's settings (metadata adalora_trace_budget: null where no mask),
// and the fixture's kept ranks per step sum to it.
func TestAdaLoRABudgetSchedule(t *testing.T) {
	e := testutil.OpenExpected(t, fixture)
	var trace []*int
	require.NoError(t, json.Unmarshal([]byte(e.Meta(t, "adalora_trace_budget")), &trace))
	kept, shape := e.I64(t, "adalora_kept_ranks")
	cfg := fixtureConfig(t)
	require.Len(t, trace, *cfg.TotalStep)
	initial, target := 6*cfg.InitR, 6*cfg.TargetR
	for step, want := range trace {
		budget, mask := cfg.Budget(step, initial, target)
		if step < *cfg.TotalStep-cfg.Tfinal {
			require.Equal(t, want != nil, mask, "step %d", step)
		}
		sum := int64(0)
		for j := int64(0); j < shape[1]; j++ {
			sum += kept[int64(step)*shape[1]+j]
		}
		if want == nil {
			require.Equal(t, initial, budget, "step %d", step)
			require.Equal(t, int64(initial), sum, "step %d", step)
			continue
		}
		require.Equal(t, *want, budget, "step %d", step)
		require.Equal(t, int64(*want), sum, "step %d: the fixture's kept ranks", step)
	}
}

// The call's adapter selection reaches the layers (peft.CallAdapters): a
// call with adapters disabled gives the base's logits without touching
// the model; a mixed-adapter batch is refused with a clear error.
func TestAdaLoRACallSelection(t *testing.T) {
	e := testutil.OpenExpected(t, fixture)
	m, err := peft.Load(loadLlama(t), adapterDir(t))
	require.NoError(t, err)
	s := tensor.NoGradScope()
	defer s.Close()
	restore := peft.WithSelection(s, &peft.Selection{Disabled: true})
	out := m.ForwardT(s, fixtureBatch(t, s, e, false))
	require.NoError(t, s.Err())
	require.LessOrEqual(t, testutil.MaxDiff(s.Float32s(out.Logits), e.F32(t, "logits_base")), 1e-4)
	restore()
	testutil.RequireLogits(t, m, e, "logits", 1e-4)

	s2 := tensor.NoGradScope()
	defer s2.Close()
	peft.WithSelection(s2, &peft.Selection{Rows: []string{"default", peft.BaseAdapterName}})
	m.ForwardT(s2, fixtureBatch(t, s2, e, false))
	require.ErrorContains(t, s2.Err(), "(adalora.SVDLinear) cannot run different adapters per row")
}
