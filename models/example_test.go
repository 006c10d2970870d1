package models_test

import (
	"fmt"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// Activation checkpointing on one training pass: the forward pass keeps
// one input per decoder layer, and Backward recomputes the layers.
func ExampleCheckpoint() {
	m, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Free()
	s := tensor.NewScope()
	defer s.Close()
	ids := s.FromInt64([]int64{1, 87, 23, 301, 5, 44, 410, 9}, 1, 8)
	ck := models.NewCheckpoint(0)
	defer ck.Free()
	out := m.ForwardT(s, &models.Batch{InputIDs: ids, Labels: ids, Checkpoint: ck})
	ck.Backward(s, out.Loss)
	if err := s.Err(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("layers checkpointed:", ck.Len())
	for _, np := range nn.NamedParams(m) {
		if np.Name == "model.layers.0.self_attn.q_proj.weight" || np.Name == "model.embed_tokens.weight" {
			fmt.Println(np.Name, "has a gradient:", s.Grad(np.Param.T()) != nil)
		}
	}
	// Output:
	// layers checkpointed: 2
	// model.embed_tokens.weight has a gradient: true
	// model.layers.0.self_attn.q_proj.weight has a gradient: true
}
