package lora

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
)

// SaveConverted writes adapter name of m — initialised with PiSSA or OLoRA,
// then trained — to dir as a plain LoRA adapter that loads on the original,
// untouched base model: PEFT's save_pretrained(dir,
// path_initial_model_for_weight_conversion=initialDir). initialDir holds
// the same adapter saved (Model.Save) right after its initialisation,
// before training; only its weights are read.
//
// The initialised model is W = W_res + s·B₀A₀ and the trained one
// W_res + s·B·A, so the update to the original W is
// s·(B·A − B₀·A₀) = s·[B | −B₀]·[A ; A₀]: a LoRA of rank 2r. The saved
// config has r and rank_pattern doubled, lora_alpha and alpha_pattern
// doubled (lora_alpha ×√2 with rsLoRA, so the scaling stays the same) and
// init_lora_weights true, as PEFT writes it. Other saved tensors (biases,
// modules_to_save) are written unchanged (PEFT 0.13 drops them). DoRA
// adapters (not linear in B·A) and rsLoRA with rank_pattern/alpha_pattern
// (PEFT refuses it too) are refused; an adapter of another init is
// converted with a warning, as PEFT does. It reads m and must not run
// while m is being changed (like Model.Save).
func SaveConverted(m *peft.Model, dir, name, initialDir string) error {
	pc, ok := m.Config(name)
	if !ok {
		return fmt.Errorf("lora: no adapter %q to save", name)
	}
	cfg, ok := pc.(*Config)
	if !ok {
		return fmt.Errorf("lora: adapter %q is %s, not LoRA", name, pc.PeftType())
	}
	if cfg.UseDoRA {
		return fmt.Errorf("lora: adapter %q uses DoRA; its update is not B·A and cannot be converted", name)
	}
	if cfg.UseRSLoRA && (len(cfg.RankPattern.Keys) > 0 || len(cfg.AlphaPattern.Keys) > 0) {
		return fmt.Errorf("lora: adapter %q: converting is not supported with \"rank_pattern\" or \"alpha_pattern\" together with \"use_rslora\"", name)
	}
	if kind, _, _ := parseInit(cfg.InitLoraWeights.Value); kind != initPiSSA && kind != initOLoRA && kind != initKaiming {
		peft.Warn(fmt.Sprintf("lora: adapter %q has init_lora_weights %s: the conversion is meant for PiSSA or OLoRA adapters", name, cfg.InitLoraWeights.Value))
	}
	state, err := m.AdapterStateDict(name)
	if err != nil {
		return err
	}
	path := filepath.Join(initialDir, peft.WeightsName)
	set, err := safetensors.OpenFiles(path)
	if err != nil {
		return fmt.Errorf("lora: initial adapter: %w", err)
	}
	defer set.Close()

	s := tensor.NoGradScope()
	defer s.Close()
	out := make([]nn.NamedParam, 0, len(state))
	for _, np := range state {
		cur := np.Param.T()
		var catDim int64 = -1
		switch {
		case strings.HasSuffix(np.Name, ".lora_A.weight"), strings.HasSuffix(np.Name, ".lora_embedding_A"):
			catDim = 0 // [A ; A₀]
		case strings.HasSuffix(np.Name, ".lora_B.weight"), strings.HasSuffix(np.Name, ".lora_embedding_B"):
			catDim = 1 // [B | −B₀]
		}
		if catDim < 0 {
			out = append(out, np)
			continue
		}
		info, _, ok := set.Info(np.Name)
		if !ok {
			return fmt.Errorf("lora: %s: missing tensor %q (is it the initial state of adapter %q?)", path, np.Name, name)
		}
		if !nn.SameShape(info.Shape, cur.Shape()) {
			return fmt.Errorf("lora: %s: tensor %q has shape %v, the adapter's is %v", path, np.Name, info.Shape, cur.Shape())
		}
		prev := s.SetDevice(cur.Device())
		init, err := nn.TensorFromFile(s, set, np.Name, cur.DType())
		s.SetDevice(prev)
		if err != nil {
			return fmt.Errorf("lora: %w", err)
		}
		if catDim == 1 {
			init = s.Neg(init)
		}
		out = append(out, nn.NamedParam{Name: np.Name, Param: nn.NewParam(s.Contiguous(s.Cat(catDim, cur, init)))})
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("lora: convert %q: %w", name, err)
	}
	conv := *cfg
	conv.InitLoraWeights = Init{Value: "true"}
	conv.R *= 2
	if conv.UseRSLoRA {
		conv.LoraAlpha *= math.Sqrt2
	} else {
		conv.LoraAlpha *= 2
	}
	conv.RankPattern, conv.AlphaPattern = doubled(cfg.RankPattern), doubled(cfg.AlphaPattern)
	return peft.WriteAdapter(dir, &conv, out)
}

// doubled is p with every value times 2.
func doubled(p OrderedMap) OrderedMap {
	out := OrderedMap{Keys: append([]string(nil), p.Keys...), Values: map[string]float64{}}
	for k, v := range p.Values {
		out.Values[k] = 2 * v
	}
	return out
}
