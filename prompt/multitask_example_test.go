package prompt_test

import (
	"context"
	"fmt"

	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prompt"
	"github.com/gopeft/peft/tensor"
)

// Multitask prompt tuning: 8 virtual tokens shared by 2 tasks, each task
// scaling them by its own rank-2 matrix. Every forward and generation
// names each row's task.
func ExampleMultitaskConfig() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := peft.New(base, &prompt.MultitaskConfig{
		TuningConfig: prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 8}},
		NumTasks:     2,
		NumRanks:     2,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()

	s := tensor.NoGradScope()
	defer s.Close()
	out, err := model.Forward(s, models.Inputs{
		InputIDs: s.FromInt64([]int64{1, 87, 23, 1, 87, 23}, 2, 3),
		TaskIDs:  s.FromInt64([]int64{0, 1}, 2), // row 0 is task 0, row 1 task 1
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("logits", out.Logits.Shape())

	res, err := generate.Generate(context.Background(), model,
		generate.Input{InputIDs: [][]int64{{1, 87, 23}}, TaskIDs: []int64{1}}, generate.GenerationConfig{MaxNewTokens: 4})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("generated", len(res.Sequences[0])-3, "tokens")
	// Output:
	// trainable params: 800 || all params: 140,384 || trainable%: 0.5699
	// logits [2 11 512]
	// generated 4 tokens
}
