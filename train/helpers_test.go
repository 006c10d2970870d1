package train

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

var tinyDir = filepath.Join("..", "testdata", "hf", "llama-tiny")

// byteTok maps byte b to id 100+b (within llama-tiny's 512 ids); BOS 1,
// EOS 2, PAD 0.
type byteTok struct{}

func (byteTok) Encode(text string, _ bool) ([]int, error) {
	out := make([]int, len(text))
	for i := 0; i < len(text); i++ {
		out[i] = 100 + int(text[i])
	}
	return out, nil
}

func (byteTok) SpecialTokens() data.SpecialTokens { return data.SpecialTokens{BOS: 1, EOS: 2, PAD: 0} }

// copyTask is n records "copy <word>" → "<word>", of varying lengths.
func copyTask(t testing.TB, n, offset int) *data.Dataset {
	words := []string{"ab", "cde", "fghi", "jk", "lmnop", "qr", "stu", "vwxyz"}
	var recs []data.Instruction
	for i := 0; i < n; i++ {
		w := words[(i+offset)%len(words)] + fmt.Sprint((i+offset)%7)
		recs = append(recs, data.Instruction{Instruction: "copy " + w, Output: w})
	}
	tmpl, err := data.TemplateByName("raw")
	require.NoError(t, err)
	ds, err := data.Instructions(byteTok{}, recs, data.Options{Template: tmpl})
	require.NoError(t, err)
	return ds
}

// tinyLoRA is llama-tiny with LoRA on q,v (dropout as given), its LoRA
// weights drawn from seed.
func tinyLoRA(t testing.TB, dropout float64, seed int64) *peft.Model {
	base, err := llama.Load(tinyDir)
	require.NoError(t, err)
	tensor.ManualSeed(seed)
	m, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 8, LoraDropout: dropout,
		TargetModules: lora.List("q_proj", "v_proj")})
	require.NoError(t, err)
	t.Cleanup(func() { nn.FreeParams(m) })
	return m
}
