package testutil

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// Root is the module root (the folder holding go.mod), found from the
// current directory, which is the package's folder under `go test`.
func Root(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && isLibraryModule(data) {
				return dir
			}
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, parent, dir, "no go.mod of github.com/gopeft/peft above the test's folder")
		dir = parent
	}
}

func isLibraryModule(gomod []byte) bool {
	const want = "module github.com/gopeft/peft\n"
	return len(gomod) >= len(want) && string(gomod[:len(want)]) == want
}

// Fixtures is the absolute path of testdata/hf, the golden files made by
// transformers and PEFT (testdata/hf/README.md), joined with elems.
func Fixtures(t testing.TB, elems ...string) string {
	t.Helper()
	f := filepath.Join(append([]string{Root(t), "testdata", "hf"}, elems...)...)
	_, err := os.Stat(f)
	require.NoError(t, err, "golden fixtures expected at testdata/hf")
	return f
}

// Load loads a fixture checkpoint (testdata/hf/<name>) with a family's
// Load and frees it when the test ends.
func Load[M interface{ Free() }, O any](t testing.TB, load func(string, ...O) (M, error), name string, opts ...O) M {
	t.Helper()
	m, err := load(Fixtures(t, name), opts...)
	require.NoError(t, err, name)
	t.Cleanup(m.Free)
	return m
}

// Expected is one golden file of testdata/hf/expected.
type Expected struct{ Set *safetensors.Set }

// OpenExpected opens testdata/hf/expected/<name>.safetensors for the test.
func OpenExpected(t testing.TB, name string) *Expected {
	t.Helper()
	set, err := safetensors.OpenFiles(Fixtures(t, "expected", name+".safetensors"))
	require.NoError(t, err)
	t.Cleanup(func() { set.Close() })
	return &Expected{set}
}

// Has says whether the file holds key.
func (e *Expected) Has(key string) bool {
	_, _, ok := e.Set.Info(key)
	return ok
}

// F32 is a copy of a float32 tensor's values.
func (e *Expected) F32(t testing.TB, key string) []float32 {
	t.Helper()
	b, err := e.Set.Data(key)
	require.NoError(t, err, key)
	return append([]float32(nil), safetensors.Float32s(b)...)
}

// I64 is a copy of an int64 tensor's values, and its shape.
func (e *Expected) I64(t testing.TB, key string) ([]int64, []int64) {
	t.Helper()
	info, _, ok := e.Set.Info(key)
	require.True(t, ok, key)
	b, err := e.Set.Data(key)
	require.NoError(t, err, key)
	return append([]int64(nil), safetensors.Int64s(b)...), info.Shape
}

// Meta is a metadata value of the file.
func (e *Expected) Meta(t testing.TB, key string) string {
	t.Helper()
	v, ok := e.Set.Files()[0].Metadata()[key]
	require.True(t, ok, key)
	return v
}

// Forwarder is what LogitsOf runs: every model and peft.Model.
type Forwarder interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}

// LogitsOf runs m on the file's input_ids and attention_mask (without
// autograd) and returns the logits and their shape.
func LogitsOf(t testing.TB, m Forwarder, e *Expected) ([]float32, []int64) {
	t.Helper()
	ids, shape := e.I64(t, "input_ids")
	mask, _ := e.I64(t, "attention_mask")
	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, shape...), AttentionMask: s.FromInt64(mask, shape...)})
	require.NoError(t, s.Err())
	return s.Float32s(out.Logits), out.Logits.Shape()
}

// MaxDiff is max |a-b|; +Inf when the lengths differ or a value is not
// finite on one side only.
func MaxDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var d float64
	for i := range a {
		x, y := float64(a[i]), float64(b[i])
		if math.IsInf(x, 0) || math.IsInf(y, 0) || math.IsNaN(x) || math.IsNaN(y) {
			if x != y {
				return math.Inf(1)
			}
			continue
		}
		d = math.Max(d, math.Abs(x-y))
	}
	return d
}

// EqualF32 says whether a and b hold the same values bit for bit.
func EqualF32(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// ReadJSON decodes a JSON object file.
func ReadJSON(t testing.TB, path string) map[string]any {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(data, &m), path)
	return m
}

// Snapshot copies every parameter's values as float32, by name (to check
// what training or a merge changed).
func Snapshot(t testing.TB, m nn.Module) map[string][]float32 {
	t.Helper()
	s := tensor.NoGradScope()
	defer s.Close()
	out := map[string][]float32{}
	for _, np := range nn.NamedParams(m) {
		out[np.Name] = append([]float32(nil), s.Float32s(s.To(np.Param.T(), tensor.Float32))...)
	}
	require.NoError(t, s.Err())
	return out
}

// RequireLogits runs m on the file's inputs and asserts its logits are
// within tol of the file's tensor key; it returns the logits' shape.
func RequireLogits(t testing.TB, m Forwarder, e *Expected, key string, tol float64) []int64 {
	t.Helper()
	got, shape := LogitsOf(t, m, e)
	d := MaxDiff(got, e.F32(t, key))
	t.Logf("%s: max abs diff %.3g", key, d)
	require.LessOrEqual(t, d, tol, key)
	return shape
}

// RequireOnlyTrainedChanged compares two Snapshots: the parameters that
// trained selects all changed, every other one is bit for bit the same.
// It returns how many changed.
func RequireOnlyTrainedChanged(t testing.TB, before, after map[string][]float32, trained func(name string) bool) int {
	t.Helper()
	changed := 0
	for k, v := range before {
		if trained(k) {
			require.False(t, EqualF32(v, after[k]), "trainable %s did not change", k)
			changed++
			continue
		}
		require.True(t, EqualF32(v, after[k]), "frozen %s changed", k)
	}
	return changed
}

// TrainSteps runs `steps` training steps of m on batch — forward,
// backward, optStep (an optimizer's Step), zero the gradients — with m in
// training mode, and returns the losses.
func TrainSteps(t testing.TB, m models.Model, optStep func() error, batch func(s *tensor.Scope) *models.Batch, steps int) []float64 {
	t.Helper()
	nn.SetTraining(m, true)
	defer nn.SetTraining(m, false)
	losses := make([]float64, 0, steps)
	for i := 0; i < steps; i++ {
		s := tensor.NewScope()
		out := m.ForwardT(s, batch(s))
		s.Backward(out.Loss)
		require.NoError(t, s.Err())
		losses = append(losses, s.Item(out.Loss))
		s.Close()
		require.NoError(t, optStep())
		require.NoError(t, nn.ZeroGrad(m))
	}
	return losses
}

// IDsLogits runs m without autograd on ids shaped [rows, len/rows] (no
// mask) and returns the logits.
func IDsLogits(t testing.TB, m Forwarder, ids []int64, rows int) []float32 {
	t.Helper()
	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, int64(rows), int64(len(ids)/rows))})
	require.NoError(t, s.Err())
	return s.Float32s(out.Logits)
}

// RequireMergedParams asserts that every "merged.<name>" tensor of the
// golden file equals parameter <name> of merged (PEFT's merged weights)
// within 1e-5, and returns how many there were.
func RequireMergedParams(t testing.TB, merged nn.Module, set *safetensors.Set) int {
	t.Helper()
	params := map[string]*nn.Param{}
	for _, np := range nn.NamedParams(merged) {
		params[np.Name] = np.Param
	}
	s := tensor.NoGradScope()
	defer s.Close()
	n := 0
	for _, key := range set.Names() {
		name, ok := strings.CutPrefix(key, "merged.")
		if !ok {
			continue
		}
		p, ok := params[name]
		require.True(t, ok, key)
		b, err := set.Data(key)
		require.NoError(t, err, key)
		require.LessOrEqual(t, MaxDiff(s.Float32s(s.To(p.T(), tensor.Float32)), safetensors.Float32s(b)), 1e-5, key)
		n++
	}
	return n
}
