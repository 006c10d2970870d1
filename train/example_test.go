package train_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/train"
)

// bytes is a stand-in tokenizer: byte b is token 100+b.
type bytes struct{}

func (bytes) Encode(text string, _ bool) ([]int, error) {
	ids := make([]int, len(text))
	for i := range text {
		ids[i] = 100 + int(text[i])
	}
	return ids, nil
}

func (bytes) SpecialTokens() data.SpecialTokens { return data.SpecialTokens{BOS: 1, EOS: 2, PAD: 0} }

// Fine-tune llama-tiny with LoRA on alpaca records: evaluation, a
// checkpoint at the end, and the metrics file.
func ExampleTrainer() {
	var recs []data.Instruction
	for i := 0; i < 32; i++ {
		w := []string{"red", "green", "blue", "cyan"}[i%4]
		recs = append(recs, data.Instruction{Instruction: "Repeat the word.", Input: w, Output: w})
	}
	tmpl, _ := data.TemplateByName("alpaca")
	ds, err := data.Instructions(bytes{}, recs, data.Options{Template: tmpl, MaxLength: 256})
	if err != nil {
		fmt.Println(err)
		return
	}
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := lora.Wrap(base, &lora.Config{R: 8, LoraAlpha: 16, TargetModules: lora.List("q_proj", "v_proj")})
	if err != nil {
		fmt.Println(err)
		return
	}
	out, _ := os.MkdirTemp("", "train")
	defer os.RemoveAll(out)
	tr := train.New(model, train.Config{LR: 2e-2, BatchSize: 8, Epochs: 4, WarmupSteps: 2, Schedule: train.Cosine,
		MaxGradNorm: 1, OutputDir: out, Progress: io.Discard}) // os.Stderr shows the progress lines
	before, _ := train.Evaluate(model, ds, 8)
	if err := tr.Fit(ds, ds); err != nil {
		fmt.Println(err)
		return
	}
	after, _ := train.Evaluate(model, ds, 8)
	fmt.Println("steps:", tr.Step())
	fmt.Println("loss went down:", after < before)
	files, _ := filepath.Glob(filepath.Join(out, "checkpoint-16", "*"))
	for _, f := range files {
		fmt.Println(filepath.Base(f))
	}
	// Output:
	// steps: 16
	// loss went down: true
	// adapter_config.json
	// adapter_model.safetensors
	// optimizer.safetensors
	// trainable.safetensors
	// trainer_state.json
}
