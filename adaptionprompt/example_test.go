package adaptionprompt_test

import (
	"errors"
	"fmt"
	"os"

	"github.com/gopeft/peft/adaptionprompt"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// LLaMA-Adapter on the top 2 layers with 4 prompt tokens each: 2 × (4 ×
// 64 + 1) trainable parameters. The gates start at zero, so the new model
// computes the base's logits; the adapter is not mergeable and saves in
// PEFT's format.
func Example() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := peft.New(base, &adaptionprompt.Config{AdapterLen: 4, AdapterLayers: 2})
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()

	s := tensor.NoGradScope()
	defer s.Close()
	out, err := model.Forward(s, models.Inputs{InputIDs: s.FromInt64([]int64{1, 87, 23}, 1, 3)})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("logits", out.Logits.Shape())
	fmt.Println("mergeable:", !errors.Is(model.Merge(false), peft.ErrNotMergeable))

	dir, _ := os.MkdirTemp("", "adaption")
	defer os.RemoveAll(dir)
	if err := model.Save(dir); err != nil {
		fmt.Println(err)
		return
	}
	state, _ := model.AdapterStateDict("default")
	for _, np := range state {
		fmt.Println(np.Name, np.Param.Shape())
	}
	// Output:
	// trainable params: 514 || all params: 140,098 || trainable%: 0.3669
	// logits [1 3 512]
	// mergeable: false
	// base_model.model.model.layers.0.self_attn.adaption_gate [1]
	// base_model.model.model.layers.0.self_attn.adaption_prompt [1 4 64]
	// base_model.model.model.layers.1.self_attn.adaption_gate [1]
	// base_model.model.model.layers.1.self_attn.adaption_prompt [1 4 64]
}
