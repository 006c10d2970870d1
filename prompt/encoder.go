package prompt

import (
	"fmt"
	"math"
	"strings"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// Embedding is PEFT's PromptEmbedding: the virtual tokens' table
// (prompt_encoder.<adapter>.embedding.weight [P, token_dim]).
type Embedding struct {
	Embedding *nn.Embedding `nn:"embedding"`
}

func (*Embedding) TypeName() string { return "PromptEmbedding" }

// Prompt implements peft.PromptEncoder: the table itself.
func (e *Embedding) Prompt(*tensor.Scope) *tensor.T { return e.Embedding.Weight.T() }

// Table implements peft.PromptEncoder.
func (e *Embedding) Table() *nn.Param { return e.Embedding.Weight }

// Encoder is PEFT's PromptEncoder (P-tuning): the table passed through
// mlp_head (MLP) or lstm_head then mlp_head (LSTM). A loaded adapter has
// the table only, holding the saved encoder output.
type Encoder struct {
	Embedding *nn.Embedding  `nn:"embedding"`
	LSTMHead  *BiLSTM        `nn:"lstm_head"`
	MLPHead   *nn.Sequential `nn:"mlp_head"`
}

func (*Encoder) TypeName() string { return "PromptEncoder" }

// Prompt implements peft.PromptEncoder: the encoder's output for the
// virtual tokens, [P, token_dim].
func (e *Encoder) Prompt(s *tensor.Scope) *tensor.T {
	x := e.Embedding.Weight.T()
	if e.MLPHead == nil {
		return x
	}
	if e.LSTMHead != nil {
		x = s.Squeeze(e.LSTMHead.Forward(s, s.Unsqueeze(x, 0)), 0) // batch of one
	}
	return e.MLPHead.Forward(s, x)
}

// Table implements peft.PromptEncoder: the table when there is no encoder
// network (a loaded adapter).
func (e *Encoder) Table() *nn.Param {
	if e.MLPHead == nil {
		return e.Embedding.Weight
	}
	return nil
}

// NewPromptEncoder implements peft.PromptConfig: fills token_dim,
// num_layers, num_attention_heads from the model, checks that token_dim is
// the model's hidden size, and builds the table (RANDOM, TEXT or
// SAMPLE_VOCAB init; zeros for a table a saved adapter fills).
func (c *TuningConfig) NewPromptEncoder(base models.CausalLM, inference bool) (peft.PromptEncoder, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	d, err := c.Prepare(base)
	if err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	if err := checkTokenDim(c.TokenDim, d); err != nil {
		return nil, err
	}
	if c.PromptTuningInit == "" {
		c.PromptTuningInit = Random
	}
	p, dim := c.VirtualTokens(), int64(c.TokenDim)
	s := tensor.NoGradScope()
	defer s.Close()
	var w *tensor.T
	switch {
	case inference:
		w = s.Zeros(tensor.Float32, p, dim)
	case c.PromptTuningInit == Random:
		w = s.Randn(tensor.Float32, p, dim)
	case c.PromptTuningInit == Text:
		ids, err := c.textIDs(p, d.VocabSize)
		if err != nil {
			return nil, err
		}
		w, err = wordEmbeddings(s, base, s.FromInt64(ids, p))
		if err != nil {
			return nil, err
		}
	case c.PromptTuningInit == SampleVocab:
		w, err = wordEmbeddings(s, base, s.Randint(d.VocabSize, p))
		if err != nil {
			return nil, err
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("prompt: init: %w", err)
	}
	return &Embedding{Embedding: &nn.Embedding{Weight: nn.NewParam(s.Keep(w))}}, nil
}

// textIDs tokenises prompt_tuning_init_text and cuts or repeats the ids to
// p, as PEFT does.
func (c *TuningConfig) textIDs(p, vocab int64) ([]int64, error) {
	if c.PromptTuningInitText == "" {
		return nil, fmt.Errorf("prompt: TEXT init needs prompt_tuning_init_text")
	}
	if c.Tokenizer == nil {
		return nil, fmt.Errorf("prompt: TEXT init needs a tokenizer (set TuningConfig.Tokenizer to encode prompt_tuning_init_text)")
	}
	if c.TokenizerNameOrPath == "" {
		if n, ok := c.Tokenizer.(interface{ NameOrPath() string }); ok {
			c.TokenizerNameOrPath = n.NameOrPath()
		}
	}
	if c.TokenizerNameOrPath == "" {
		return nil, fmt.Errorf("prompt: TEXT init needs tokenizer_name_or_path (Python PEFT refuses a TEXT config without it)")
	}
	ids, err := c.Tokenizer.Encode(c.PromptTuningInitText)
	if err != nil {
		return nil, fmt.Errorf("prompt: tokenising prompt_tuning_init_text: %w", err)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("prompt: prompt_tuning_init_text %q has no tokens", c.PromptTuningInitText)
	}
	for _, id := range ids {
		if id < 0 || id >= vocab {
			return nil, fmt.Errorf("prompt: the tokenizer gave id %d, outside the model's vocabulary of %d", id, vocab)
		}
	}
	out := make([]int64, p)
	for i := range out {
		out[i] = ids[i%len(ids)] // truncated, or repeated and truncated
	}
	return out, nil
}

// wordEmbeddings copies the model's word embeddings of ids as float32.
func wordEmbeddings(s *tensor.Scope, base models.CausalLM, ids *tensor.T) (*tensor.T, error) {
	emb, ok := base.(models.InputEmbedder)
	if !ok {
		return nil, fmt.Errorf("prompt: model %s does not expose its input embeddings (models.InputEmbedder)", nn.TypeName(base))
	}
	rows := emb.InputEmbeddings().Forward(s, ids)
	if rows != nil && rows.DType() != tensor.Float32 {
		rows = s.To(rows, tensor.Float32)
	}
	return s.Copy(s.Detach(rows)), nil
}

// NewPromptEncoder implements peft.PromptConfig: fills token_dim,
// num_layers, num_attention_heads, encoder_hidden_size from the model,
// checks that token_dim is the model's hidden size, and builds PEFT's
// encoder with PyTorch's default initialisation (just the table for a
// saved adapter to fill).
func (c *EncoderConfig) NewPromptEncoder(base models.CausalLM, inference bool) (peft.PromptEncoder, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	d, err := c.Prepare(base)
	if err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	if err := checkTokenDim(c.TokenDim, d); err != nil {
		return nil, err
	}
	if c.EncoderReparameterizationType == "" {
		c.EncoderReparameterizationType = MLP
	}
	if c.EncoderHiddenSize == 0 {
		c.EncoderHiddenSize = c.TokenDim
	}
	if c.EncoderNumLayers == 0 {
		c.EncoderNumLayers = 2
	}
	p, dim, h := c.VirtualTokens(), int64(c.TokenDim), int64(c.EncoderHiddenSize)
	s := tensor.NoGradScope()
	defer s.Close()
	if inference {
		enc := &Encoder{Embedding: &nn.Embedding{Weight: nn.NewParam(s.Keep(s.Zeros(tensor.Float32, p, dim)))}}
		return enc, s.Err()
	}
	enc := &Encoder{Embedding: &nn.Embedding{Weight: nn.NewParam(s.Keep(s.Randn(tensor.Float32, p, dim)))}}
	switch c.EncoderReparameterizationType {
	case LSTM:
		enc.LSTMHead = NewBiLSTM(s, dim, h, c.EncoderNumLayers, c.EncoderDropout)
		enc.MLPHead = nn.NewSequential(nn.NewLinearTorch(s, 2*h, 2*h, true), nn.ReLU{}, nn.NewLinearTorch(s, 2*h, dim, true))
	default:
		enc.MLPHead = nn.NewSequential(nn.NewLinearTorch(s, dim, h, true), nn.ReLU{},
			nn.NewLinearTorch(s, h, h, true), nn.ReLU{}, nn.NewLinearTorch(s, h, dim, true))
	}
	if err := s.Err(); err != nil {
		nn.FreeParams(enc)
		return nil, fmt.Errorf("prompt: init: %w", err)
	}
	return enc, nil
}

func checkTokenDim(tokenDim int, d models.Dims) error {
	if int64(tokenDim) != d.HiddenSize {
		return fmt.Errorf("prompt: token_dim %d does not match the model's hidden size %d (an adapter made for another model?)", tokenDim, d.HiddenSize)
	}
	return nil
}

// BiLSTM is torch.nn.LSTM(bidirectional=True, batch_first=True) as PEFT's
// P-tuning uses it, computed step by step from matmuls, sigmoid and tanh.
// Its parameters have PyTorch's names: weight_ih_l{k}[_reverse] [4h, in],
// weight_hh_l{k}[_reverse] [4h, h], bias_ih_l{k}[_reverse],
// bias_hh_l{k}[_reverse] [4h], gates in the order input, forget, cell,
// output.
type BiLSTM struct {
	InputSize, HiddenSize int64
	NumLayers             int
	Dropout               float64 // on each layer's output but the last, while training

	params []nn.NamedParam
	train  bool
}

// NewBiLSTM makes a bidirectional LSTM with PyTorch's initialisation (every
// parameter from U(±1/√hidden)).
func NewBiLSTM(s *tensor.Scope, in, hidden int64, layers int, dropout float64) *BiLSTM {
	l := &BiLSTM{InputSize: in, HiddenSize: hidden, NumLayers: layers, Dropout: dropout}
	bound := 1 / math.Sqrt(float64(hidden))
	for k := 0; k < layers; k++ {
		width := in
		if k > 0 {
			width = 2 * hidden
		}
		for _, sfx := range []string{"", "_reverse"} {
			for _, p := range []struct {
				name  string
				shape []int64
			}{
				{"weight_ih", []int64{4 * hidden, width}}, {"weight_hh", []int64{4 * hidden, hidden}},
				{"bias_ih", []int64{4 * hidden}}, {"bias_hh", []int64{4 * hidden}},
			} {
				t := s.Keep(s.Uniform(tensor.Float32, -bound, bound, p.shape...))
				l.params = append(l.params, nn.NamedParam{Name: fmt.Sprintf("%s_l%d%s", p.name, k, sfx), Param: nn.NewParam(t)})
			}
		}
	}
	return l
}

// Children implements nn.Container (an LSTM has parameters only).
func (l *BiLSTM) Children() []nn.Child { return nil }

// SetChild implements nn.Container.
func (l *BiLSTM) SetChild(name string, _ nn.Module) error {
	return fmt.Errorf("LSTM has no child %q", name)
}

// LocalParams implements nn.Container, in PyTorch's order.
func (l *BiLSTM) LocalParams() []nn.NamedParam { return append([]nn.NamedParam(nil), l.params...) }

// SetTraining switches the dropout between layers on or off.
func (l *BiLSTM) SetTraining(on bool) { l.train = on }

func (l *BiLSTM) TypeName() string { return "LSTM" }

func (l *BiLSTM) ExtraRepr() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d, %d, num_layers=%d, batch_first=True", l.InputSize, l.HiddenSize, l.NumLayers)
	if l.Dropout != 0 {
		fmt.Fprintf(&b, ", dropout=%g", l.Dropout)
	}
	b.WriteString(", bidirectional=True")
	return b.String()
}

// weights returns layer k's parameters in one direction (0 forward, 1 reverse).
func (l *BiLSTM) weights(k, dir int) (wih, whh, bih, bhh *tensor.T) {
	i := (2*k + dir) * 4
	return l.params[i].Param.T(), l.params[i+1].Param.T(), l.params[i+2].Param.T(), l.params[i+3].Param.T()
}

// Forward runs x [B, T, in] and returns the last layer's outputs
// [B, T, 2·hidden] (forward and reverse directions concatenated), with zero
// initial states, as torch.nn.LSTM's first output.
func (l *BiLSTM) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	if x.Dim() != 3 || x.Size(2) != l.InputSize {
		return s.Failf("LSTM: input shape %v, want [batch, seq, %d]", x.Shape(), l.InputSize)
	}
	B, T, H := x.Size(0), x.Size(1), l.HiddenSize
	in := x
	for k := 0; k < l.NumLayers; k++ {
		var dirs [2]*tensor.T
		for dir := 0; dir < 2; dir++ {
			wih, whh, bih, bhh := l.weights(k, dir)
			pre := s.Linear(in, wih, bih) // every step's input part at once: [B, T, 4h]
			h := s.Zeros(x.DType(), B, H)
			c := s.Zeros(x.DType(), B, H)
			steps := make([]*tensor.T, T)
			for n := int64(0); n < T; n++ {
				t := n
				if dir == 1 {
					t = T - 1 - n
				}
				g := s.Add(s.Select(pre, 1, t), s.Linear(h, whh, bhh))
				ig := s.Sigmoid(s.Narrow(g, 1, 0, H))
				fg := s.Sigmoid(s.Narrow(g, 1, H, H))
				cg := s.Tanh(s.Narrow(g, 1, 2*H, H))
				og := s.Sigmoid(s.Narrow(g, 1, 3*H, H))
				c = s.Add(s.Mul(fg, c), s.Mul(ig, cg))
				h = s.Mul(og, s.Tanh(c))
				steps[t] = s.Unsqueeze(h, 1)
			}
			dirs[dir] = s.Cat(1, steps...)
		}
		in = s.Cat(2, dirs[0], dirs[1])
		if l.train && l.Dropout > 0 && k < l.NumLayers-1 {
			in = s.Dropout(in, l.Dropout, true)
		}
	}
	return in
}
