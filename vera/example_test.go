package vera_test

import (
	"fmt"
	"os"

	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/vera"
)

// Wrap LLaMA-tiny with VeRA (rank 16 on q_proj and v_proj), save the
// adapter in PEFT's format (λ vectors plus the shared projections), load
// it back and merge it.
func ExampleWrap() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := vera.Wrap(base, &vera.Config{R: 16, TargetModules: peft.TargetList("q_proj", "v_proj")})
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()
	dir, _ := os.MkdirTemp("", "vera")
	defer os.RemoveAll(dir)
	if err := model.Save(dir); err != nil {
		fmt.Println(err)
		return
	}
	state, _ := model.AdapterStateDict(peft.DefaultAdapter)
	fmt.Println(len(state), "tensors, e.g.", state[0].Name, state[len(state)-1].Name)

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
	// 10 tensors, e.g. base_model.model.model.layers.0.self_attn.q_proj.vera_lambda_b base_model.vera_B
	// true <nil>
}
