package testutil

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/internal/memstat"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// The checks every model family's tests run, written once. Each takes the
// family's model as a models.Model and the batch it needs as data, so a new
// family's tests are a list of calls.

// BatchFunc builds a batch inside s (with ck as its Checkpoint, which may be
// nil).
type BatchFunc func(s *tensor.Scope, ck *models.Checkpoint) *models.Batch

// RequireSameTensors asserts that two safetensors files, or two folders of
// them (HF checkpoints), hold the same tensor names with the same bytes.
func RequireSameTensors(t testing.TB, want, got string) {
	t.Helper()
	open := func(path string) *safetensors.Set {
		var set *safetensors.Set
		var err error
		if st, serr := os.Stat(path); serr == nil && st.IsDir() {
			set, err = safetensors.OpenDir(path)
		} else {
			set, err = safetensors.OpenFiles(path)
		}
		require.NoError(t, err)
		return set
	}
	a, b := open(want), open(got)
	defer a.Close()
	defer b.Close()
	require.Equal(t, a.Names(), b.Names())
	for _, k := range a.Names() {
		da, err := a.Data(k)
		require.NoError(t, err, k)
		db, err := b.Data(k)
		require.NoError(t, err, k)
		require.Equal(t, da, db, k)
	}
}

// RequireSameAdapter asserts that two PEFT adapter folders hold the same
// weights (adapter_model.safetensors, bit for bit) and the same
// adapter_config.json fields.
func RequireSameAdapter(t testing.TB, want, got string) {
	t.Helper()
	RequireSameTensors(t, filepath.Join(want, "adapter_model.safetensors"), filepath.Join(got, "adapter_model.safetensors"))
	require.Equal(t, ReadJSON(t, filepath.Join(want, "adapter_config.json")), ReadJSON(t, filepath.Join(got, "adapter_config.json")))
}

// RequireSaveRoundTrip saves m into a new folder and asserts that its
// tensors are the bytes of the checkpoint m was loaded from; it returns the
// folder for further checks of config.json.
func RequireSaveRoundTrip(t testing.TB, m models.Model, loadedFrom string) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, m.Save(dir))
	RequireSameTensors(t, loadedFrom, dir)
	return dir
}

// RequireBackwardThroughEverything runs one training forward/backward and
// asserts every parameter got a gradient; it returns the loss.
func RequireBackwardThroughEverything(t testing.TB, m models.Model, batch BatchFunc) float64 {
	t.Helper()
	nn.SetTraining(m, true)
	defer nn.SetTraining(m, false)
	s := tensor.NewScope()
	defer s.Close()
	out := m.ForwardT(s, batch(s, nil))
	s.Backward(out.Loss)
	require.NoError(t, s.Err())
	for _, np := range nn.NamedParams(m) {
		require.NotNil(t, s.Grad(np.Param.T()), np.Name)
	}
	loss := s.Item(out.Loss)
	require.NoError(t, nn.ZeroGrad(m))
	return loss
}

// RequireTrainingRSSFlat runs 200 forward+backward steps after 20 warm-up
// ones and asserts RSS grew by less than 5%: every libtorch tensor of a
// step is freed.
func RequireTrainingRSSFlat(t testing.TB, m models.Model, batch BatchFunc) {
	t.Helper()
	step := func() {
		s := tensor.NewScope()
		defer s.Close()
		out := m.ForwardT(s, batch(s, nil))
		s.Backward(out.Loss)
		require.NoError(t, s.Err())
		require.NoError(t, nn.ZeroGrad(m))
	}
	before, after, growth := memstat.Growth(20, 200, step)
	t.Logf("RSS %d KiB -> %d KiB after 200 steps (%.2f%%)", before>>10, after>>10, 100*growth)
	require.Less(t, growth, 0.05)
}

// RequireCheckpointingSameGradients asserts that with activation
// checkpointing every parameter gets the gradient of a plain backward
// pass (the model must have no dropout). The forward's scope is freed
// before backward, as train.Trainer does, so the checkpoint must hold what
// its recomputation reads.
func RequireCheckpointingSameGradients(t testing.TB, m models.Model, batch BatchFunc) {
	t.Helper()
	nn.SetTraining(m, true)
	defer nn.SetTraining(m, false)
	grads := func(ck *models.Checkpoint) map[string][]float32 {
		require.NoError(t, nn.ZeroGrad(m))
		s := tensor.NewScope()
		defer s.Close()
		out := m.ForwardT(s, batch(s, ck))
		loss := s.Keep(out.Loss)
		defer loss.Free()
		s.FreeAll()
		ck.Backward(s, loss)
		require.NoError(t, s.Err())
		g := map[string][]float32{}
		for _, np := range nn.NamedParams(m) {
			g[np.Name] = s.Float32s(s.Grad(np.Param.T()))
		}
		return g
	}
	plain := grads(nil)
	ck := models.NewCheckpoint(1)
	defer ck.Free()
	checked := grads(ck)
	require.Len(t, checked, len(plain))
	for k, v := range plain {
		require.LessOrEqual(t, MaxDiff(v, checked[k]), 1e-5, k)
	}
}

// RequireKVCacheMatchesFull feeds each row of a [rows, L] batch (ids, mask)
// through the KV cache — the first `prompt` tokens at once, then one token
// at a time with the growing mask — and asserts the logits of every
// unpadded position equal want, the full forward pass's [rows, L, vocab]
// logits, within 1e-4. positions, when not nil, gives the position ids of
// each step from the row's mask so far (families whose forward does not
// derive them).
func RequireKVCacheMatchesFull(t testing.TB, m models.Model, ids, mask []int64, rows, prompt int, want []float32,
	positions func(s *tensor.Scope, mask *tensor.T) *tensor.T) {
	t.Helper()
	L := len(ids) / rows
	vocab := len(want) / len(ids)
	for row := 0; row < rows; row++ {
		rowIDs, rowMask := ids[row*L:(row+1)*L], mask[row*L:(row+1)*L]
		s := tensor.NoGradScope()
		cache := &models.Cache{}
		step := func(from, to int) []float32 {
			am := s.FromInt64(rowMask[:to], 1, int64(to))
			b := &models.Batch{InputIDs: s.FromInt64(rowIDs[from:to], 1, int64(to-from)), AttentionMask: am,
				PastKeyValues: cache, UseCache: true}
			if positions != nil {
				b.PositionIDs = s.Narrow(positions(s, am), 1, int64(from), int64(to-from))
			}
			out := m.ForwardT(s, b)
			require.NoError(t, s.Err())
			return s.Float32s(out.Logits)
		}
		got := step(0, prompt)
		for p := prompt; p < L; p++ {
			got = append(got, step(p, p+1)...)
		}
		require.EqualValues(t, L, cache.Len())
		cache.Free()
		s.Close()
		for p := 0; p < L; p++ {
			if rowMask[p] == 0 {
				continue
			}
			w := want[(row*L+p)*vocab : (row*L+p+1)*vocab]
			require.LessOrEqual(t, MaxDiff(got[p*vocab:(p+1)*vocab], w), 1e-4, "row %d position %d", row, p)
		}
	}
}

// RequirePrefixKVEqualsCache asserts that prefix key/values (PEFT's prefix
// tuning input) of the first `split` tokens of row, with a mask over the
// remaining tokens only, give the logits of a KV cache holding the same
// keys/values, and that both equal the last positions of one pass over
// the whole row.
func RequirePrefixKVEqualsCache(t testing.TB, m models.Model, row []int64, split int) {
	t.Helper()
	n := int64(len(row) - split)
	s := tensor.NoGradScope()
	defer s.Close()
	cache := &models.Cache{}
	defer cache.Free()
	m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(row[:split], 1, int64(split)), PastKeyValues: cache, UseCache: true})
	full := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(row[split:], 1, n), PastKeyValues: cache})
	prefix := make([]models.KV, len(cache.Layers))
	copy(prefix, cache.Layers)
	withPrefix := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(row[split:], 1, n), PrefixKV: prefix,
		AttentionMask: s.Ones(tensor.Int64, 1, n)})
	whole := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(row, 1, int64(len(row)))})
	require.NoError(t, s.Err())
	require.LessOrEqual(t, MaxDiff(s.Float32s(full.Logits), s.Float32s(withPrefix.Logits)), 1e-5)
	require.LessOrEqual(t, MaxDiff(s.Float32s(s.Narrow(whole.Logits, 1, int64(split), n)), s.Float32s(full.Logits)), 1e-4)
}

// PaddedRows is a [4, 32] batch of token ids below vocab whose last two
// rows are left-padded by 3 (ids, attention mask), for memory loops.
func PaddedRows(vocab int64) (ids, mask []int64) {
	ids = make([]int64, 4*32)
	mask = make([]int64, 4*32)
	for i := range ids {
		ids[i] = int64(i*37) % vocab
		mask[i] = 1
		if i%32 < 3 && i >= 64 {
			mask[i] = 0
		}
	}
	return ids, mask
}
