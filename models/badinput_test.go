package models_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bert"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/models/gpt2"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func fixture(t *testing.T, name string) string {
	dir := filepath.Join("..", "testdata", "hf", name)
	_, err := os.Stat(dir)
	require.NoError(t, err, "golden fixtures expected at testdata/hf")
	return dir
}

func familyLoaders() map[string]func(dir string) (models.Model, error) {
	return map[string]func(dir string) (models.Model, error){
		"llama-tiny": func(d string) (models.Model, error) { return llama.Load(d) },
		"gpt2-tiny":  func(d string) (models.Model, error) { return gpt2.Load(d) },
		"bloom-tiny": func(d string) (models.Model, error) { return bloom.Load(d) },
		"bert-tiny":  func(d string) (models.Model, error) { return bert.Load(d) },
	}
}

// Issue #19 item 2: every family's forward checks its scope's error before
// using a result, so inputs of inconsistent shapes give an error, never a
// panic (LLaMA used to index out of range on a mask of another shape).
func TestBadInputsGiveErrorsInEveryFamily(t *testing.T) {
	load := familyLoaders()
	for name, ld := range load {
		t.Run(name, func(t *testing.T) {
			m, err := ld(fixture(t, name))
			require.NoError(t, err)
			ds := tensor.NewScope() // the inputs (borrowed by every forward)
			defer ds.Close()
			ids := func(v []int64, shape ...int64) *tensor.T { return ds.FromInt64(v, shape...) }
			in := ids([]int64{1, 5, 7, 9, 11, 13}, 2, 3)
			cases := map[string]models.Inputs{
				"mask of another length":     {InputIDs: in, AttentionMask: ids([]int64{1, 1, 1, 1}, 2, 2)},
				"mask of another batch":      {InputIDs: in, AttentionMask: ids([]int64{1, 1, 1}, 1, 3)},
				"mask of one dimension":      {InputIDs: in, AttentionMask: ids([]int64{1, 1, 1, 1, 1, 1}, 6)},
				"position ids of one row":    {InputIDs: in, PositionIDs: ids([]int64{0, 1}, 1, 2)},
				"input ids of one dimension": {InputIDs: ids([]int64{1, 5, 7}, 3)},
				"no input":                   {},
			}
			if name == "bloom-tiny" { // ALiBi: BLOOM takes no position ids (HF ignores them)
				delete(cases, "position ids of one row")
			}
			if name != "bert-tiny" {
				cases["cache of another model"] = models.Inputs{InputIDs: in, PastKeyValues: &models.Cache{Layers: make([]models.KV, 7)}}
			}
			for what, c := range cases {
				require.NotPanics(t, func() {
					s := tensor.NoGradScope() // a failed forward poisons its scope
					defer s.Close()
					out, err := m.Forward(s, c)
					require.Error(t, err, what)
					require.Nil(t, out, what)
				}, what)
			}
		})
	}
}
