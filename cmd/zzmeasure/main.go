package main

import (
	"fmt"
	"io"
	"os"

	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/internal/memstat"
	"github.com/gopeft/peft/internal/tensor"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/train"
)

func main() {
	mode := os.Args[1]
	s := tensor.NewScope()
	x := s.Ones(tensor.Float32, 4, 4)
	_ = s.Sum(s.Matmul(x, x), false)
	s.Close()
	fmt.Println("baseline_rss", memstat.RSS()>>20, "peak", memstat.PeakRSS()>>20)
	if mode == "base" {
		return
	}
	cfg := &llama.Config{HiddenSize: 512, IntermediateSize: 1376, NumHiddenLayers: 8, NumAttentionHeads: 8, NumKeyValueHeads: 8, VocabSize: 8000, MaxPositionEmbeddings: 512}
	m, err := llama.New(cfg, 1)
	if err != nil {
		panic(err)
	}
	var model train.Model = m
	if mode == "lora" || mode == "lora-ckpt" {
		pm, err := lora.Wrap(m, &lora.Config{R: 8, LoraAlpha: 16, TargetModules: lora.List("q_proj", "v_proj")})
		if err != nil {
			panic(err)
		}
		model = pm
	}
	fmt.Println("after_model_rss", memstat.RSS()>>20)
	var samples []data.Sample
	for i := 0; i < 12; i++ {
		ids := make([]int64, 256)
		for j := range ids {
			ids[j] = int64((i*131 + j*7919) % 8000)
		}
		samples = append(samples, data.Sample{InputIDs: ids, Labels: ids})
	}
	ds := &data.Dataset{Samples: samples}
	tr := train.New(model, train.Config{LR: 1e-4, BatchSize: 4, MaxSteps: 3, Progress: io.Discard, Checkpointing: mode == "full-ckpt" || mode == "lora-ckpt"})
	if err := tr.Fit(ds, nil); err != nil {
		panic(err)
	}
	fmt.Println("peak_rss", memstat.PeakRSS()>>20)
}
