package gemma_test

import (
	"context"
	"fmt"

	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/models/gemma"
)

// Load a Gemma 3 text checkpoint folder and decode greedily from two
// prompts of different lengths (left-padded, KV cache).
func ExampleLoad() {
	m, err := gemma.Load("../../testdata/ref/gemma3-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Free()
	fmt.Println(m.ModelType(), m.Config.LayerTypes)
	in := generate.LeftPad([][]int64{
		{39, 13, 16, 8, 49, 18, 20, 50, 13, 38, 46, 34},
		{64, 45, 28, 51, 90, 6, 61, 29, 9},
	}, 0)
	cfg := generate.DefaultGenerationConfig()
	cfg.MaxNewTokens = 6
	cfg.EOSTokenID = nil
	out, err := generate.Generate(context.Background(), m, in, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(out.NewTokens(0))
	fmt.Println(out.NewTokens(1))
	// Output:
	// gemma3_text [sliding_attention sliding_attention sliding_attention sliding_attention sliding_attention full_attention]
	// [76 71 76 76 21 93]
	// [41 41 41 41 46 15]
}
