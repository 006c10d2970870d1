package train

import (
	"fmt"
	"math"
	"strings"

	"github.com/gopeft/peft/nn"
)

// DefaultLoraPlusLREmbedding is PEFT's (and LLaMA-Factory's) learning rate
// of LoRA adapters on embedding layers under LoRA+.
const DefaultLoraPlusLREmbedding = 1e-6

// LoraPlusGroups splits the trainable params of model into LoRA+'s
// parameter groups (Hayou et al. 2024; PEFT's create_loraplus_optimizer):
//
//   - "groupA": lora_A and every other parameter, at lr with weightDecay;
//   - "embedding": the adapters of LoRA embedding layers
//     (lora_embedding_A/B), at lrEmbedding with weightDecay;
//   - "groupB": lora_B and one-dimensional parameters that decay, at
//     lr × ratio with weightDecay;
//   - "groupB_no_decay": lora_B and one-dimensional parameters that do not
//     decay (biases, normalisation weights: transformers'
//     get_decay_parameter_names), at lr × ratio without weight decay.
//
// PEFT 0.13 never fills the embedding group (it looks up the parameter,
// not its layer); current PEFT does, and so does this function. model
// (an nn.Module, or nil) says which parameters sit in normalisation
// layers; without it only names with "bias" count as no-decay.
func LoraPlusGroups(model any, params []nn.NamedParam, lr, ratio, lrEmbedding, weightDecay float64) []ParamGroup {
	inNorm := map[string]bool{}
	if mod, ok := model.(nn.Module); ok {
		normParams(mod, "", inNorm)
	}
	groups := []ParamGroup{
		{Name: "groupA", LR: lr, WeightDecay: weightDecay},
		{Name: "embedding", LR: lrEmbedding, WeightDecay: weightDecay},
		{Name: "groupB", LR: lr * ratio, WeightDecay: weightDecay},
		{Name: "groupB_no_decay", LR: lr * ratio, WeightDecay: 0},
	}
	for _, np := range params {
		g := 0
		switch {
		case strings.Contains(np.Name, ".lora_embedding_A.") || strings.Contains(np.Name, ".lora_embedding_B.") ||
			strings.HasSuffix(np.Name, ".lora_embedding_A") || strings.HasSuffix(np.Name, ".lora_embedding_B"):
			g = 1
		case strings.Contains(np.Name, "lora_B") || len(np.Param.Shape()) == 1:
			if inNorm[np.Name] || strings.Contains(np.Name, "bias") {
				g = 3
			} else {
				g = 2
			}
		}
		groups[g].Params = append(groups[g].Params, np)
	}
	return groups
}

// normParams records the full names of the parameters that live in
// normalisation layers (a module whose type name has "Norm": LayerNorm,
// RMSNorm and the families' own, transformers' ALL_LAYERNORM_LAYERS).
func normParams(m nn.Module, path string, out map[string]bool) {
	if strings.Contains(nn.TypeName(m), "Norm") {
		for _, np := range nn.NamedParams(m) {
			out[join(path, np.Name)] = true
		}
		return
	}
	for _, c := range nn.Children(m) {
		normParams(c.Module, join(path, c.Name), out)
	}
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// newOptimizer is AdamW over the run's parameters: one group, or LoRA+'s
// groups when LoraPlusLRRatio is set.
func (t *Trainer) newOptimizer(params []nn.NamedParam) (*AdamW, error) {
	c := &t.cfg
	ac := AdamWConfig{LR: c.LR, Beta1: c.Beta1, Beta2: c.Beta2, Eps: c.Eps, WeightDecay: c.WeightDecay}
	if c.LoraPlusLRRatio == 0 {
		if c.LoraPlusLREmbedding != 0 {
			return nil, fmt.Errorf("train: LoraPlusLREmbedding (loraplus_lr_embedding) is set without LoraPlusLRRatio (loraplus_lr_ratio)")
		}
		return NewAdamW(params, ac), nil
	}
	if math.IsNaN(c.LoraPlusLRRatio) || math.IsInf(c.LoraPlusLRRatio, 0) || c.LoraPlusLRRatio < 0 {
		return nil, fmt.Errorf("train: LoraPlusLRRatio (loraplus_lr_ratio) must be a positive number, got %v", c.LoraPlusLRRatio)
	}
	emb := c.LoraPlusLREmbedding
	if emb == 0 {
		emb = DefaultLoraPlusLREmbedding
	}
	if math.IsNaN(emb) || math.IsInf(emb, 0) || emb < 0 {
		return nil, fmt.Errorf("train: LoraPlusLREmbedding (loraplus_lr_embedding) must be a positive number, got %v", emb)
	}
	return NewAdamWGroups(LoraPlusGroups(t.model, params, c.LR, c.LoraPlusLRRatio, emb, c.WeightDecay), ac), nil
}
