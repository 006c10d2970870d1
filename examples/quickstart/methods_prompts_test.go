package main

import (
	"context"
	"testing"

	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
)

// The adaption-prompt and multitask specs build on the quickstart's base,
// train a step through the Trainer's interface (multitask: task 0 for
// every row) and generate; their estimates count the adapters' parameters.
func TestPromptMethodSpecs(t *testing.T) {
	for _, name := range []string{"adaption", "multitask"} {
		sp, err := methodSpec(name)
		if err != nil {
			t.Fatal(err)
		}
		base, err := llama.New(baseConfig(64), 1)
		if err != nil {
			t.Fatal(err)
		}
		pm, err := peft.New(base, sp.config())
		if err != nil {
			t.Fatal(name, err)
		}
		trainable, _ := countTrainable(pm)
		var m train.Model = pm
		if sp.task0 {
			m = taskZero{pm}
		}
		s := tensor.NewScope()
		x := s.FromInt64([]int64{1, 5, 9, 12, 1, 7, 3, 4}, 2, 4)
		out := m.ForwardT(s, &models.Batch{InputIDs: x, Labels: x})
		s.Backward(out.Loss)
		if err := s.Err(); err != nil {
			t.Fatal(name, err)
		}
		s.Close()
		if _, err := generate.Generate(context.Background(), m.(generate.Model), generate.Input{InputIDs: [][]int64{{1, 5, 9}}},
			generate.GenerationConfig{MaxNewTokens: 2}); err != nil {
			t.Fatal(name, err)
		}
		shape := &peft.ModelShape{Family: "llama", ModelType: "llama", Layers: 4, Hidden: 128, Heads: 4, KVHeads: 4, HeadDim: 32,
			Intermediate: 384, Vocab: 64, Tied: true}
		o := sp.estimate
		o.Batch, o.Seq = 1, 16
		est, err := peft.EstimateMemory(shape, o)
		if err != nil {
			t.Fatal(name, err)
		}
		if est.Trainable != trainable {
			t.Fatalf("%s: estimate counts %d trainable parameters, the model has %d", name, est.Trainable, trainable)
		}
		_ = freeModel(pm)
	}
}
