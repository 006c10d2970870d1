package ia3_test

import (
	"strings"
	"testing"

	"github.com/gopeft/peft/ia3"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// A call's Selection runs its adapter without changing the model; IA3
// cannot run one adapter per row and says so.
func TestCallSelection(t *testing.T) {
	m, err := ia3.Wrap(loadBloom(t), &ia3.Config{})
	require.NoError(t, err)
	defer nn.FreeParams(m)
	require.NoError(t, m.AddAdapter("second", &ia3.Config{}))
	s := tensor.NoGradScope()
	defer s.Close()
	for _, np := range nn.NamedParams(m) {
		if strings.HasSuffix(np.Name, ".ia3_l.second") {
			s.CopyInto(np.Param.T(), s.Full(tensor.Float32, 0.5, np.Param.Shape()...))
		}
	}
	x := s.FromInt64([]int64{4, 8, 15, 16, 23, 42}, 1, 6)
	logits := func(sel *peft.Selection) ([]float32, error) {
		s := tensor.NoGradScope() // one per call: a failed scope stays failed
		defer s.Close()
		out, err := m.ForwardWith(s, models.Inputs{InputIDs: s.FromInt64([]int64{4, 8, 15, 16, 23, 42}, 1, 6)}, sel)
		if err != nil {
			return nil, err
		}
		return s.Float32s(out.Logits), nil
	}
	own := func() []float32 { return s.Float32s(m.ForwardT(s, &models.Batch{InputIDs: x}).Logits) }
	base := own() // "default" is all ones: the base model
	require.NoError(t, m.SetAdapter("second"))
	second := own()
	require.NoError(t, m.SetAdapter("default"))
	require.Greater(t, maxDiff(base, second), 1e-3)

	got, err := logits(&peft.Selection{Adapters: []string{"second"}})
	require.NoError(t, err)
	require.LessOrEqual(t, maxDiff(got, second), 1e-6)
	require.Equal(t, []string{"default"}, m.ActiveAdapters())
	require.NoError(t, m.SetAdapter("second"))
	got, err = logits(&peft.Selection{Disabled: true})
	require.NoError(t, err)
	require.LessOrEqual(t, maxDiff(got, base), 1e-6)
	_, err = logits(&peft.Selection{Rows: []string{"second"}})
	require.ErrorContains(t, err, "cannot run different adapters per row")
	_, err = logits(&peft.Selection{Adapters: []string{"third"}})
	require.ErrorContains(t, err, `no adapter "third"`)

	// merged: a call may not ask for other adapters
	require.NoError(t, m.Merge(false))
	_, err = logits(&peft.Selection{Adapters: []string{"default"}})
	require.ErrorContains(t, err, "merged")
	got, err = logits(&peft.Selection{Adapters: []string{"second"}})
	require.NoError(t, err)
	require.LessOrEqual(t, maxDiff(got, second), 1e-4)
}
