package prompt_test

import (
	"errors"
	"fmt"
	"os"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prompt"
	"github.com/gopeft/peft/tensor"
)

// Prompt tuning: 8 trainable virtual tokens in front of a frozen model.
// The logits get 8 extra leading positions; the adapter cannot be merged;
// it saves and loads in PEFT's format.
func ExampleTuningConfig() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := peft.New(base, &prompt.TuningConfig{
		PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 8},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()

	s := tensor.NoGradScope() // owns the inputs and the outputs
	defer s.Close()
	ids := s.FromInt64([]int64{1, 87, 23}, 1, 3)
	out, err := model.Forward(s, models.Inputs{InputIDs: ids})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("logits", out.Logits.Shape())
	fmt.Println("mergeable:", !errors.Is(model.Merge(false), peft.ErrNotMergeable))

	dir, _ := os.MkdirTemp("", "prompt")
	defer os.RemoveAll(dir)
	if err := model.Save(dir); err != nil {
		fmt.Println(err)
		return
	}
	fresh, _ := llama.Load("../testdata/hf/llama-tiny")
	loaded, err := peft.Load(fresh, dir) // PEFT's inference form: the saved table
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg, _ := loaded.Config("default")
	fmt.Println(cfg.PeftType(), cfg.(*prompt.TuningConfig).TokenDim)
	// Output:
	// trainable params: 512 || all params: 140,096 || trainable%: 0.3655
	// logits [1 11 512]
	// mergeable: false
	// PROMPT_TUNING 64
}

// P-tuning with an LSTM encoder: the encoder trains, its output is what
// gets saved.
func ExampleEncoderConfig() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := peft.New(base, &prompt.EncoderConfig{
		PromptLearningConfig:          peft.PromptLearningConfig{NumVirtualTokens: 8},
		EncoderReparameterizationType: prompt.LSTM,
		EncoderHiddenSize:             32,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()
	state, _ := model.AdapterStateDict("default")
	defer state[0].Param.Free() // computed from the encoder
	fmt.Println(state[0].Name, state[0].Param.Shape())
	// Output:
	// trainable params: 59,008 || all params: 198,592 || trainable%: 29.7132
	// prompt_embeddings [8 64]
}
