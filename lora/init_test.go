package lora_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/testutil"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

var dataInitFixtures = []string{"lora-pissa", "lora-olora", "lora-loftq"}

// params maps a model's parameter names to their values (float32).
func paramValues(t testing.TB, m nn.Module) map[string][]float32 {
	s := tensor.NoGradScope()
	defer s.Close()
	out := map[string][]float32{}
	for _, np := range nn.NamedParams(m) {
		out[np.Name] = s.Float32s(s.To(np.Param.T(), tensor.Float32))
	}
	require.NoError(t, s.Err())
	return out
}

// product is B·A of b [out, r] and a [r, in] given flat.
func product(b, a []float32, out, r, in int) []float32 {
	p := make([]float32, out*in)
	for i := 0; i < out; i++ {
		for j := 0; j < in; j++ {
			var acc float64
			for k := 0; k < r; k++ {
				acc += float64(b[i*r+k]) * float64(a[k*in+j])
			}
			p[i*in+j] = float32(acc)
		}
	}
	return p
}

// The inits right after get_peft_model: B·A and the rewritten base weight
// of every target equal PEFT's (init.<module>.* in the golden file). SVD and
// QR signs are LAPACK's choice, so A and B are compared through B·A.
func TestDataInitMatchesPEFT(t *testing.T) {
	for _, name := range dataInitFixtures {
		t.Run(name, func(t *testing.T) {
			fx := fixtures(t)
			e := testutil.OpenExpected(t, "llama-tiny__"+name)
			cfg, err := peft.ReadConfig(filepath.Join(fx, "adapters", "llama-tiny", name))
			require.NoError(t, err)
			base, err := llama.Load(filepath.Join(fx, "llama-tiny"))
			require.NoError(t, err)
			m, err := peft.New(base, cfg)
			require.NoError(t, err)
			defer nn.FreeParams(m)
			want := strings.SplitN(e.Meta(t, "print_trainable_parameters"), " || trainable%", 2)[0]
			require.Equal(t, want, strings.SplitN(peft.TrainableSummary(m), " || trainable%", 2)[0])

			got := paramValues(t, m)
			n := 0
			for _, key := range e.Set.Names() {
				mod, ok := strings.CutSuffix(strings.TrimPrefix(key, "init."), ".base_weight")
				if !strings.HasPrefix(key, "init.") || !ok {
					continue
				}
				info, _, _ := e.Set.Info("init." + mod + ".lora_A")
				r, in := int(info.Shape[0]), int(info.Shape[1])
				bw := e.F32(t, key)
				out := len(bw) / in
				prefix := "base_model.model." + mod
				d := testutil.MaxDiff(got[prefix+".base_layer.weight"], bw)
				t.Logf("%s: base weight max diff %.3g", mod, d)
				require.LessOrEqual(t, d, 2e-6, mod)
				wantBA := product(e.F32(t, "init."+mod+".lora_B"), e.F32(t, "init."+mod+".lora_A"), out, r, in)
				gotBA := product(got[prefix+".lora_B.default.weight"], got[prefix+".lora_A.default.weight"], out, r, in)
				d = testutil.MaxDiff(gotBA, wantBA)
				t.Logf("%s: B·A max diff %.3g", mod, d)
				require.LessOrEqual(t, d, 2e-5, mod)
				n++
			}
			require.Equal(t, 4, n)
		})
	}
}

// The shipped adapters through the API: peft.Load re-runs the init on the
// untouched base (so the disabled model is the rewritten one), then loads
// the trained A and B; logits, disabled logits and the merge match PEFT's,
// and Save writes the shipped files back (weights bit for bit, same config).
func TestDataInitAdapterFixtures(t *testing.T) {
	for _, name := range dataInitFixtures {
		t.Run(name, func(t *testing.T) {
			fx := fixtures(t)
			dir := filepath.Join(fx, "adapters", "llama-tiny", name)
			base, err := llama.Load(filepath.Join(fx, "llama-tiny"))
			require.NoError(t, err)
			e := testutil.OpenExpected(t, "llama-tiny__"+name)
			m, err := peft.Load(base, dir)
			require.NoError(t, err)
			testutil.RequireLogits(t, m, e, "logits", 1e-4)
			restore := m.DisableAdapters()
			testutil.RequireLogits(t, m, e, "logits_disabled", 1e-4)
			restore()
			// the disabled model is not the original one
			dis, _ := testutil.LogitsOf(t, m, e)
			require.Greater(t, testutil.MaxDiff(dis, e.F32(t, "logits_base")), 1e-3)

			saved := t.TempDir()
			require.NoError(t, m.Save(saved))
			testutil.RequireSameAdapter(t, dir, saved)

			require.NoError(t, m.Merge(false))
			testutil.RequireLogits(t, m, e, "logits_merged", 1e-4)
			require.NoError(t, m.Unmerge())
			testutil.RequireLogits(t, m, e, "logits", 1e-4)
			merged, err := m.MergeAndUnload()
			require.NoError(t, err)
			testutil.RequireLogits(t, merged, e, "logits_merged", 1e-4)
			require.Equal(t, 2, testutil.RequireMergedParams(t, merged, e.Set))
			nn.FreeParams(merged)
		})
	}
}

var _ = lora.NewConfig
