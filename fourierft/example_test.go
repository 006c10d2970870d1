package fourierft_test

import (
	"fmt"
	"os"

	"github.com/gopeft/peft/fourierft"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
)

// Wrap LLaMA-tiny with FourierFT (64 spectral coefficients on q_proj and
// v_proj), save the adapter in PEFT's format, load it back — the
// coefficients' locations come back from random_loc_seed — and merge it.
func ExampleWrap() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := fourierft.Wrap(base, &fourierft.Config{NFrequency: 64, TargetModules: peft.TargetList("q_proj", "v_proj")})
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()
	rows, cols := fourierft.Locations(777, 64, 64, 3)
	fmt.Println("first locations:", rows, cols)

	dir, _ := os.MkdirTemp("", "fourierft")
	defer os.RemoveAll(dir)
	if err := model.Save(dir); err != nil {
		fmt.Println(err)
		return
	}
	fresh, _ := llama.Load("../testdata/hf/llama-tiny")
	loaded, err := peft.Load(fresh, dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	merged, err := loaded.MergeAndUnload()
	fmt.Println(merged != nil, err)
	// Output:
	// trainable params: 256 || all params: 139,840 || trainable%: 0.1831
	// first locations: [33 14 49] [39 49 25]
	// true <nil>
}
