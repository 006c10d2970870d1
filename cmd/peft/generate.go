package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"

	"github.com/gopeft/peft/generate"
	"github.com/gopeft/peft/safetensors"
)

// generateCmd is `peft generate`: IN as for logits (left-padded input_ids
// and attention_mask); OUT gets sequences (int64 [B·K, S+N], prompt
// included, pad_token_id after eos), with --scores the processed scores of
// every step (float32 [rows, N, V]), and with beams sequences_scores. The
// model's generation_config.json (or config.json) gives the defaults;
// flags override them.
func generateCmd(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	modelDir := fs.String("model", "", "HF model folder (config.json + safetensors)")
	var adapters multi
	fs.Var(&adapters, "adapter", "PEFT adapter folder (repeatable; the first is active)")
	merge := fs.Bool("merge", false, "merge the first adapter into the base weights before generating")
	input := fs.String("input", "", "safetensors file with input_ids and optional attention_mask (int64 [B,S], left-padded), position_ids and task_ids (int64 [B])")
	out := fs.String("out", "", "safetensors file to write sequences (and scores) to")
	maxNew := fs.Int("max-new-tokens", 0, "tokens to generate per sequence (required)")
	numBeams := fs.Int("num-beams", 1, "beam search with this many beams")
	numReturn := fs.Int("num-return-sequences", 1, "sequences per prompt (samples, or the best beams)")
	doSample := fs.Bool("do-sample", false, "sample instead of greedy / plain beam search")
	temperature := fs.Float64("temperature", 1, "sampling temperature")
	topK := fs.Int("top-k", 50, "keep the K most likely tokens when sampling (0: all)")
	topP := fs.Float64("top-p", 1, "nucleus sampling: keep the most likely tokens up to probability P")
	repetition := fs.Float64("repetition-penalty", 1, "penalty for tokens already in the sequence (HF semantics)")
	seed := fs.Int64("seed", 0, "seed for sampling (reproducible)")
	minNew := fs.Int("min-new-tokens", 0, "generate at least this many tokens before an eos")
	lengthPenalty := fs.Float64("length-penalty", 1, "beam search: exponent of the length dividing a beam's log-probability")
	earlyStopping := fs.String("early-stopping", "false", `beam search stopping rule: true, false or never`)
	scores := fs.Bool("scores", false, "also write the processed scores of every step")
	lf := addLoadFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *modelDir == "":
		return errors.New("generate: --model is required")
	case *input == "":
		return errors.New("generate: --input is required")
	case *out == "":
		return errors.New("generate: --out is required")
	case *maxNew <= 0:
		return errors.New("generate: --max-new-tokens N (N > 0) is required")
	case *merge && len(adapters) == 0:
		return errors.New("generate: --merge needs an --adapter")
	case fs.NArg() > 0:
		return fmt.Errorf("generate: unexpected argument %q", fs.Arg(0))
	}

	cfg, err := generate.FromPretrained(*modelDir)
	if err != nil {
		return err
	}
	cfg.MaxNewTokens, cfg.OutputScores = *maxNew, *scores
	var flagErr error
	bad := func(format string, args ...any) {
		if flagErr == nil {
			flagErr = fmt.Errorf("generate: "+format, args...)
		}
	}
	fs.Visit(func(f *flag.Flag) { // flags given override the model's generation config
		switch f.Name {
		case "num-beams":
			cfg.NumBeams = *numBeams
		case "num-return-sequences":
			cfg.NumReturnSequences = *numReturn
		case "do-sample":
			cfg.DoSample = *doSample
		case "temperature":
			if *temperature <= 0 {
				bad("--temperature must be positive, got %v", *temperature)
			}
			cfg.Temperature = *temperature
		case "top-k":
			cfg.TopK = *topK
		case "top-p":
			cfg.TopP = zeroAsTiny(*topP)
		case "repetition-penalty":
			if *repetition <= 0 {
				bad("--repetition-penalty must be positive, got %v", *repetition)
			}
			cfg.RepetitionPenalty = *repetition
		case "seed":
			cfg.Seed = seed
		case "min-new-tokens":
			cfg.MinNewTokens = *minNew
		case "length-penalty":
			cfg.LengthPenalty = zeroAsTiny(*lengthPenalty)
		case "early-stopping":
			var err error
			if cfg.EarlyStopping, err = generate.ParseEarlyStopping(*earlyStopping); err != nil {
				bad("--early-stopping %q: want true, false or never", *earlyStopping)
			}
		}
	})
	if flagErr != nil {
		return flagErr
	}

	in, err := readPrompts(*input)
	if err != nil {
		return err
	}
	lopts, err := lf.options()
	if err != nil {
		return fmt.Errorf("generate: %w", err)
	}
	m, err := loadWithAdapters(*modelDir, adapters, *merge, lopts...)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := generate.Generate(ctx, m, in, cfg)
	if err != nil {
		return err
	}
	width := len(res.Sequences[0])
	flat := make([]int64, 0, len(res.Sequences)*width)
	for _, row := range res.Sequences {
		flat = append(flat, row...)
	}
	tensors := []safetensors.Tensor{{
		Name: "sequences", DType: safetensors.I64, Shape: []int64{int64(len(res.Sequences)), int64(width)},
		Data: safetensors.Int64Bytes(flat),
	}}
	if *scores {
		sh := res.ScoresShape
		tensors = append(tensors, safetensors.Tensor{
			Name: "scores", DType: safetensors.F32, Shape: []int64{int64(sh[0]), int64(sh[1]), int64(sh[2])},
			Data: safetensors.Float32Bytes(res.Scores),
		})
	}
	if res.SequenceScores != nil {
		tensors = append(tensors, safetensors.Tensor{
			Name: "sequences_scores", DType: safetensors.F32, Shape: []int64{int64(len(res.SequenceScores))},
			Data: safetensors.Float32Bytes(res.SequenceScores),
		})
	}
	return safetensors.Write(*out, tensors, map[string]string{"format": "pt"})
}

// readPrompts reads input_ids and the optional attention_mask and
// position_ids (int64 [B,S]) and task_ids (int64 [B]).
func readPrompts(path string) (generate.Input, error) {
	set, err := safetensors.OpenFiles(path)
	if err != nil {
		return generate.Input{}, err
	}
	defer set.Close()
	read := func(key string, required bool) ([][]int64, []int64, error) {
		info, _, ok := set.Info(key)
		if !ok {
			if required {
				return nil, nil, fmt.Errorf("%s: no tensor %q", path, key)
			}
			return nil, nil, nil
		}
		if info.DType != safetensors.I64 || len(info.Shape) != 2 {
			return nil, nil, fmt.Errorf("%s: tensor %q must be I64 [batch, seq], got %s %v", path, key, info.DType, info.Shape)
		}
		b, err := set.Data(key)
		if err != nil {
			return nil, nil, err
		}
		v := safetensors.Int64s(b)
		rows := make([][]int64, info.Shape[0])
		for i := range rows {
			rows[i] = v[int64(i)*info.Shape[1] : int64(i+1)*info.Shape[1]]
		}
		return rows, info.Shape, nil
	}
	ids, shape, err := read("input_ids", true)
	if err != nil {
		return generate.Input{}, err
	}
	mask, mshape, err := read("attention_mask", false)
	if err != nil {
		return generate.Input{}, err
	}
	if mask != nil && (mshape[0] != shape[0] || mshape[1] != shape[1]) {
		return generate.Input{}, fmt.Errorf("%s: attention_mask has shape %v, input_ids %v", path, mshape, shape)
	}
	pos, pshape, err := read("position_ids", false)
	if err != nil {
		return generate.Input{}, err
	}
	if pos != nil && (pshape[0] != shape[0] || pshape[1] != shape[1]) {
		return generate.Input{}, fmt.Errorf("%s: position_ids has shape %v, input_ids %v", path, pshape, shape)
	}
	var tasks []int64
	if info, _, ok := set.Info("task_ids"); ok {
		if info.DType != safetensors.I64 || len(info.Shape) != 1 || info.Shape[0] != shape[0] {
			return generate.Input{}, fmt.Errorf("%s: tensor \"task_ids\" must be I64 [%d] (one task per prompt), got %s %v", path, shape[0], info.DType, info.Shape)
		}
		b, err := set.Data("task_ids")
		if err != nil {
			return generate.Input{}, err
		}
		tasks = append([]int64(nil), safetensors.Int64s(b)...)
	}
	return generate.Input{InputIDs: ids, AttentionMask: mask, PositionIDs: pos, TaskIDs: tasks}, nil
}

// zeroAsTiny maps an exact 0 to the tiny positive value that
// GenerationConfig uses for 0 (its zero value means "default").
func zeroAsTiny(v float64) float64 {
	if v == 0 {
		return 1e-300
	}
	return v
}
