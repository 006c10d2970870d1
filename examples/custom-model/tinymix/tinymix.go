// Package tinymix is a model family defined outside the library, with only
// its public packages (tensor, nn, models, safetensors): a small causal
// language model whose blocks mix each position with the previous one
// (TokenShift, a layer written here) and then run an MLP (w_in, w_out).
//
//	embed_tokens → [norm → shift → w_out(gelu(w_in(·))) + residual] × N → norm → lm_head
//
// It is what a user writes to bring their own architecture to PEFT: a tree
// of modules with `nn:"name"` tags (the names are the checkpoint keys and
// what target_modules match), a forward in a tensor.Scope, and a HF-style
// folder (config.json + model.safetensors). A field that a method may
// replace (w_in, w_out, lm_head) has the type nn.Layer, so that LoRA can
// put its own layer there.
//
// A Model is not safe for concurrent mutation; concurrent forwards are.
package tinymix

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
)

// Config is config.json.
type Config struct {
	ModelType        string  `json:"model_type"`
	VocabSize        int64   `json:"vocab_size"`
	HiddenSize       int64   `json:"hidden_size"`
	IntermediateSize int64   `json:"intermediate_size"`
	NumHiddenLayers  int64   `json:"num_hidden_layers"`
	LayerNormEps     float64 `json:"layer_norm_eps"`
}

// Validate refuses sizes that cannot make a model.
func (c *Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{{"vocab_size", c.VocabSize}, {"hidden_size", c.HiddenSize}, {"intermediate_size", c.IntermediateSize}, {"num_hidden_layers", c.NumHiddenLayers}} {
		if f.v <= 0 || f.v > 1<<20 {
			return fmt.Errorf("tinymix: config %q is %d, want 1..%d", f.name, f.v, 1<<20)
		}
	}
	if !(c.LayerNormEps > 0) {
		return fmt.Errorf("tinymix: config \"layer_norm_eps\" is %g, want > 0", c.LayerNormEps)
	}
	return nil
}

// Model is the family's causal LM.
type Model struct {
	Embed  *nn.Embedding  `nn:"embed_tokens"`
	Layers *nn.ModuleList `nn:"layers"` // of *Block
	Norm   *nn.LayerNorm  `nn:"norm"`
	Head   nn.Layer       `nn:"lm_head"`

	Config Config
	Path   string // the folder it was loaded from, if any
}

// Block is one layer: a token shift and an MLP, with a residual.
type Block struct {
	Norm  *nn.LayerNorm `nn:"norm"`
	Shift *TokenShift   `nn:"shift"`
	In    nn.Layer      `nn:"w_in"`
	Out   nn.Layer      `nn:"w_out"`
}

// TokenShift is a layer written outside the library: each position becomes
// x + mix·(x_prev − x), x_prev being the previous position's vector (zeros
// before the first), with a learned mix per channel.
type TokenShift struct {
	Mix *nn.Param `nn:"mix"`
}

// Forward implements nn.Layer: x [B, L, H] → [B, L, H], owned by s.
func (t *TokenShift) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	if x.Dim() != 3 {
		return s.Failf("tinymix: token shift: want [batch, seq, hidden], got %v", x.Shape())
	}
	b, l, h := x.Size(0), x.Size(1), x.Size(2)
	prev := s.Cat(1, s.Zeros(x.DType(), b, 1, h), s.Narrow(x, 1, 0, l-1))
	return s.Add(x, s.Mul(t.Mix.T(), s.Sub(prev, x)))
}

// Forward runs the block on x [B, L, H].
func (b *Block) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	h := b.Shift.Forward(s, b.Norm.Forward(s, x))
	h = b.Out.Forward(s, s.Gelu(b.In.Forward(s, h), "none"))
	return s.Add(x, h)
}

// New makes a model with random weights drawn after tensor.ManualSeed(seed).
func New(cfg Config, seed int64) (*Model, error) {
	if cfg.ModelType == "" {
		cfg.ModelType = "tinymix"
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := tensor.NewScope()
	defer s.Close()
	tensor.ManualSeed(seed)
	h := cfg.HiddenSize
	m := &Model{Config: cfg, Embed: nn.NewEmbedding(s, cfg.VocabSize, h, 0.5), Layers: &nn.ModuleList{},
		Norm: nn.NewLayerNorm(s, h, cfg.LayerNormEps), Head: nn.NewLinear(s, h, cfg.VocabSize, false, 0.1)}
	for i := int64(0); i < cfg.NumHiddenLayers; i++ {
		m.Layers.Items = append(m.Layers.Items, &Block{
			Norm:  nn.NewLayerNorm(s, h, cfg.LayerNormEps),
			Shift: &TokenShift{Mix: nn.NewParam(s.Keep(s.Full(tensor.Float32, 0.5, h)))},
			In:    nn.NewLinear(s, h, cfg.IntermediateSize, true, 0.1),
			Out:   nn.NewLinear(s, cfg.IntermediateSize, h, true, 0.1),
		})
	}
	if err := s.Err(); err != nil {
		nn.FreeParams(m)
		return nil, fmt.Errorf("tinymix: new: %w", err)
	}
	return m, nil
}

// Load reads a folder written by Save.
func Load(dir string) (*Model, error) {
	path := filepath.Join(dir, "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("tinymix: %s: %w", path, err)
	}
	if cfg.ModelType != "tinymix" {
		return nil, fmt.Errorf("tinymix: %s: model_type %q, want \"tinymix\"", path, cfg.ModelType)
	}
	m, err := New(cfg, 0)
	if err != nil {
		return nil, fmt.Errorf("tinymix: %s: %w", path, err)
	}
	set, err := safetensors.OpenDir(dir)
	if err != nil {
		m.Free()
		return nil, err
	}
	defer set.Close()
	if err := nn.LoadState(m, set, nn.LoadOptions{}); err != nil { // copies: the files can close
		m.Free()
		return nil, err
	}
	m.Path = dir
	return m, nil
}

// Save writes config.json and model.safetensors to dir.
func (m *Model) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cfg, err := json.MarshalIndent(m.Config, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), append(cfg, '\n'), 0o644); err != nil {
		return err
	}
	return nn.SaveState(m, filepath.Join(dir, "model.safetensors"), map[string]string{"format": "pt"})
}

// Free releases the model's tensors.
func (m *Model) Free() { nn.FreeParams(m) }

// NameOrPath is recorded by PEFT as base_model_name_or_path.
func (m *Model) NameOrPath() string { return m.Path }

// ModelType is config.json's model_type.
func (m *Model) ModelType() string { return m.Config.ModelType }

// ForwardT implements models.Model: logits [B, L, vocab] for input_ids
// [B, L], and HF's shifted cross-entropy when labels are given. The family
// has no attention, so it reads no mask and keeps no cache.
func (m *Model) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	if b.InputIDs == nil || b.InputIDs.Dim() != 2 {
		s.Fail(errors.New("tinymix: input_ids: want int64 [batch, seq]"))
		return &models.Output{}
	}
	if b.UseCache || b.PastKeyValues != nil || b.InputsEmbeds != nil || len(b.PrefixKV) > 0 {
		s.Fail(errors.New("tinymix: no key/value cache, inputs_embeds or prefixes in this family"))
		return &models.Output{}
	}
	x := m.Embed.Forward(s, b.InputIDs)
	for _, l := range m.Layers.Items {
		mark := s.Mark()
		x = l.(*Block).Forward(s, x)
		s.FreeSince(mark, x) // the block's intermediates (autograd keeps what backward needs)
	}
	logits := m.Head.Forward(s, m.Norm.Forward(s, x))
	return &models.Output{Logits: logits, Loss: models.ShiftedLoss(s, logits, b.Labels)}
}

// Forward implements models.Model (see models.Run for the memory rules).
func (m *Model) Forward(s *tensor.Scope, in models.Inputs) (*models.Outputs, error) {
	return models.Run(s, "tinymix", m.ForwardT, in)
}

var _ models.CausalLM = (*Model)(nil)
