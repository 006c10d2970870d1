package peft

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gopeft/peft/internal/lycoris/factor"
)

// ModelShape is what the memory estimate needs of a model, read from its
// config.json alone (so a job can be sized before downloading weights).
type ModelShape struct {
	// Family is the architecture: "llama" (LLaMA, Qwen2/3, Mistral,
	// Phi-3), "gemma" (Gemma 2, Gemma 3 text), "bloom" or "gpt2".
	Family    string
	ModelType string // config.json's model_type
	Hidden    int64  // hidden_size / n_embd / n_embed
	Layers    int64  // num_hidden_layers / n_layer
	Heads     int64  // num_attention_heads / n_head
	KVHeads   int64  // num_key_value_heads (= Heads without GQA)
	HeadDim   int64
	// Intermediate is the MLP width (intermediate_size; 4·hidden for
	// BLOOM, n_inner or 4·hidden for GPT-2).
	Intermediate int64
	Vocab        int64
	Positions    int64 // learned position embeddings (GPT-2's n_positions); 0 otherwise
	Tied         bool  // lm_head shares the input embedding
	QKVBias      bool  // LLaMA family: q/k/v have biases (Qwen2, attention_bias)
	OBias        bool  // LLaMA family: o_proj has a bias (attention_bias, not Qwen2)
}

// ReadModelShape reads a config.json, or the config.json of a folder.
func ReadModelShape(path string) (*ModelShape, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "config.json")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("peft: estimate: %w", err)
	}
	return ParseModelShape(path, b)
}

// ParseModelShape parses config.json bytes (path names the file in errors).
func ParseModelShape(path string, data []byte) (*ModelShape, error) {
	var raw map[string]any
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("peft: estimate: %s: %w", path, err)
	}
	num := func(keys ...string) (int64, bool) {
		for _, k := range keys {
			if v, ok := raw[k].(float64); ok {
				return int64(v), true
			}
		}
		return 0, false
	}
	need := func(keys ...string) (int64, error) {
		v, ok := num(keys...)
		if !ok || v <= 0 {
			return 0, fmt.Errorf("peft: estimate: %s: missing field %q", path, keys[0])
		}
		return v, nil
	}
	mt, _ := raw["model_type"].(string)
	m := &ModelShape{ModelType: mt}
	var err error
	switch mt {
	case "llama", "qwen2", "qwen3", "mistral", "phi3":
		m.Family = "llama"
	case "bloom":
		m.Family = "bloom"
	case "gpt2":
		m.Family = "gpt2"
	case "gemma2", "gemma3_text":
		m.Family = "gemma"
	default:
		return nil, fmt.Errorf("peft: estimate: %s: model_type %q is not one the estimate knows (llama, qwen2, qwen3, mistral, phi3, gemma2, gemma3_text, bloom, gpt2)", path, mt)
	}
	if m.Hidden, err = need("hidden_size", "n_embd", "n_embed"); err != nil {
		return nil, err
	}
	if m.Layers, err = need("num_hidden_layers", "n_layer"); err != nil {
		return nil, err
	}
	if m.Heads, err = need("num_attention_heads", "n_head"); err != nil {
		return nil, err
	}
	if m.Vocab, err = need("vocab_size"); err != nil {
		return nil, err
	}
	m.KVHeads = m.Heads
	if v, ok := num("num_key_value_heads"); ok && v > 0 {
		m.KVHeads = v
	}
	m.HeadDim = m.Hidden / m.Heads
	if m.Family == "gemma" {
		m.HeadDim = 256 // transformers' default for Gemma 2/3
	}
	if v, ok := num("head_dim"); ok && v > 0 {
		m.HeadDim = v
	}
	tied, hasTied := raw["tie_word_embeddings"].(bool)
	switch m.Family {
	case "llama":
		if m.Intermediate, err = need("intermediate_size"); err != nil {
			return nil, err
		}
		m.Tied = hasTied && tied
		bias, _ := raw["attention_bias"].(bool)
		m.QKVBias = bias || mt == "qwen2"
		m.OBias = bias && mt != "qwen2"
	case "gemma":
		if m.Intermediate, err = need("intermediate_size"); err != nil {
			return nil, err
		}
		m.Tied = !hasTied || tied // Gemma ties by default
		bias, _ := raw["attention_bias"].(bool)
		m.QKVBias, m.OBias = bias, bias
	case "bloom":
		m.Intermediate = 4 * m.Hidden
		m.Tied = !hasTied || tied
	case "gpt2":
		m.Intermediate = 4 * m.Hidden
		if v, ok := num("n_inner"); ok && v > 0 {
			m.Intermediate = v
		}
		m.Positions, _ = num("n_positions", "max_position_embeddings")
		m.Tied = !hasTied || tied
	}
	return m, nil
}

// linearShape is one Linear (or Conv1D) layer of a decoder layer.
type linearShape struct {
	name      string // HF module name (q_proj, query_key_value, c_attn, …)
	in, out   int64
	bias      bool
	feedfwd   bool // the MLP's output projection (IA3's feedforward module)
	attention bool
}

// linears lists one decoder layer's Linear layers.
func (m *ModelShape) linears() []linearShape {
	h, q, kv, i := m.Hidden, m.Heads*m.HeadDim, m.KVHeads*m.HeadDim, m.Intermediate
	switch m.Family {
	case "bloom":
		return []linearShape{
			{name: "query_key_value", in: h, out: 3 * h, bias: true, attention: true},
			{name: "dense", in: h, out: h, bias: true, attention: true},
			{name: "dense_h_to_4h", in: h, out: i, bias: true},
			{name: "dense_4h_to_h", in: i, out: h, bias: true, feedfwd: true},
		}
	case "gpt2":
		return []linearShape{
			{name: "c_attn", in: h, out: 3 * h, bias: true, attention: true},
			{name: "attn.c_proj", in: h, out: h, bias: true, attention: true},
			{name: "c_fc", in: h, out: i, bias: true},
			{name: "mlp.c_proj", in: i, out: h, bias: true, feedfwd: true},
		}
	}
	if m.ModelType == "phi3" { // fused projections
		return []linearShape{
			{name: "qkv_proj", in: h, out: q + 2*kv, bias: m.QKVBias, attention: true},
			{name: "o_proj", in: q, out: h, bias: m.OBias, attention: true},
			{name: "gate_up_proj", in: h, out: 2 * i},
			{name: "down_proj", in: i, out: h, feedfwd: true},
		}
	}
	return []linearShape{
		{name: "q_proj", in: h, out: q, bias: m.QKVBias, attention: true},
		{name: "k_proj", in: h, out: kv, bias: m.QKVBias, attention: true},
		{name: "v_proj", in: h, out: kv, bias: m.QKVBias, attention: true},
		{name: "o_proj", in: q, out: h, bias: m.OBias, attention: true},
		{name: "gate_proj", in: h, out: i},
		{name: "up_proj", in: h, out: i},
		{name: "down_proj", in: i, out: h, feedfwd: true},
	}
}

// normParams is the parameters of one norm layer (RMSNorm: weight;
// LayerNorm: weight and bias).
func (m *ModelShape) normParams() int64 {
	if m.Family == "llama" || m.Family == "gemma" {
		return m.Hidden
	}
	return 2 * m.Hidden
}

// LayerParams is the parameter count of one decoder layer, and the part of
// it in Linear weights (what 4-bit quantization stores in 4 bits) and in
// biases (Linear and LayerNorm biases: what BitFit trains).
func (m *ModelShape) LayerParams() (total, linearWeights, biases int64) {
	var linBias int64
	for _, l := range m.linears() {
		linearWeights += l.in * l.out
		if l.bias {
			linBias += l.out
		}
	}
	biases = linBias
	norms := int64(2)
	switch m.Family {
	case "gemma":
		norms = 4 // pre/post attention, pre/post feed-forward RMSNorms
	case "llama":
	default:
		biases += 2 * m.Hidden // the two LayerNorms' biases
	}
	total = linearWeights + linBias + norms*m.normParams()
	if m.ModelType == "qwen3" || m.ModelType == "gemma3_text" {
		total += 2 * m.HeadDim // q_norm, k_norm
	}
	return total, linearWeights, biases
}

// Params is the model's parameter count (a tied lm_head counted once, as
// HF's num_parameters does).
func (m *ModelShape) Params() int64 {
	layer, _, _ := m.LayerParams()
	total := m.Layers*layer + m.Vocab*m.Hidden + m.normParams() // embeddings, final norm
	if !m.Tied {
		total += m.Vocab * m.Hidden
	}
	switch m.Family {
	case "bloom":
		total += m.normParams() // word_embeddings_layernorm
	case "gpt2":
		total += m.Positions * m.Hidden
	}
	return total
}

// MemoryOptions describes a training job for EstimateMemory.
type MemoryOptions struct {
	// Method is "full", "lora", "qlora" (LoRA on a 4-bit NF4 base),
	// "ia3", "prompt" (prompt tuning), "prefix" (prefix tuning without
	// projection), "adapter" (Houlsby bottleneck), "bitfit", "freeze";
	// "loha" and "lokr" (LyCORIS, with R and LoKr's fields below);
	// "oft", "boft" (one butterfly factor), "hra";
	// "vera" (rank R), "fourierft" (NFrequency), "lntuning".
	// projection), "adapter" (Houlsby bottleneck), "bitfit", "freeze",
	// "adaption-prompt" (LLaMA-Adapter) or "multitask-prompt" (multitask
	// prompt tuning).
	Method string
	// R is LoRA's rank [8] (OFT's and HRA's r, BOFT's boft_block_size); TargetModules its (or IA3's) modules [PEFT's
	// R is LoRA's rank [8] (AdaLoRA's init_r [12]); TargetModules its (or IA3's) modules [PEFT's
	// defaults for the model type]; "all-linear" targets every Linear of
	// the decoder layers.
	R             int
	TargetModules []string
	// NumVirtualTokens for prompt and prefix tuning [20].
	NumVirtualTokens int
	// ReductionFactor of bottleneck adapters [16].
	ReductionFactor int
	// TrainableLayers for freeze tuning: the last n layers train [2].
	TrainableLayers int
	// DecomposeFactor and DecomposeBoth are LoKr's decompose_factor [-1;
	// 0 means -1] and decompose_both (R is LoKr's and LoHa's r too).
	DecomposeFactor int
	DecomposeBoth   bool
	// NFrequency is FourierFT's spectral coefficients per layer [1000]
	// (VeRA's rank is R).
	NFrequency int
	// AdapterLen and AdapterLayers for "adaption-prompt": prompt tokens
	// per layer [10] and how many top layers get them [all].
	AdapterLen, AdapterLayers int
	// NumTasks and NumRanks for "multitask-prompt" (with
	// NumVirtualTokens) [1, 1].
	NumTasks, NumRanks int
	// Batch and Seq size the activations [1, 512].
	Batch, Seq int64
	// DType of weights and activations: "fp32", "fp16" or "bf16"
	// [fp32; bf16 for qlora's unquantized parts].
	DType string
	// MixedPrecision keeps an fp32 master copy of 16-bit trainable
	// weights in the optimizer (and its states in fp32), as AMP does.
	MixedPrecision bool
	// Optimizer is "adamw"/"adam" (2 states per trainable parameter),
	// "sgd" (none), "momentum" (1), "adagrad" or "rmsprop" (1) [adamw].
	Optimizer string
	// Checkpointing keeps only each layer's input (activation
	// checkpointing) plus one layer's activations during recomputation.
	Checkpointing bool
	// Device is "cpu" or "cuda" [cpu]; it sets the default Overhead.
	Device string
	// Overhead is the framework's own memory in bytes (0: the device's
	// default: CPUOverhead or CUDAOverhead).
	Overhead int64
}

// Framework overheads: the resident memory of a process that has loaded
// libtorch and run a few ops (161 MiB measured for this library on CPU;
// see BENCHMARKS.md), and a CUDA context (the seed notes: a few hundred
// MB, depending on the version).
const (
	CPUOverhead  int64 = 160 << 20
	CUDAOverhead int64 = 500 << 20
)

// CPUAllocatorRetention is the memory glibc's malloc keeps on CPU beyond
// the live tensors, as a share of the activations it serves from its heap
// (blocks up to 32 MiB; larger ones are mmapped and returned when freed):
// the forward pass frees each layer's intermediates, and the heap keeps
// most of those holes (measured 0.8–0.85 × for this library; with
// MALLOC_MMAP_THRESHOLD_=131072 it vanishes, at twice the step time). On
// CUDA PyTorch's caching allocator reuses blocks and the estimate adds
// nothing.
const CPUAllocatorRetention = 0.8

// MemoryEstimate is the peak memory of a training step by component
// (bytes), following the seed notes: framework, weights, activations,
// gradients and optimizer states.
type MemoryEstimate struct {
	Method          string
	Params          int64 // the model's parameters (plus the method's)
	Trainable       int64
	Overhead        int64
	Weights         int64 // every parameter, base and method, in its storage dtype
	Activations     int64 // what the forward pass saves for backward, plus the logits
	Gradients       int64 // one per trainable parameter
	OptimizerStates int64 // optimizer states (+ fp32 master weights with mixed precision)
	// Allocator is what the CPU allocator keeps beyond live tensors
	// (CPUAllocatorRetention × Activations; 0 on CUDA).
	Allocator int64
	Total     int64
}

// Methods lists the methods EstimateMemory knows.
var Methods = []string{"full", "lora", "qlora", "adalora", "ia3", "loha", "lokr", "oft", "boft", "hra", "vera",
	"fourierft", "lntuning", "prompt", "prefix", "adaption-prompt", "multitask-prompt", "adapter", "bitfit", "freeze"}

// defaultTargets are PEFT's default target modules by model type (its
// TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING and IA3's mappings).
func defaultTargets(m *ModelShape, method string) []string {
	if method == "ia3" {
		switch m.Family {
		case "bloom":
			return []string{"query_key_value", "dense_4h_to_h"}
		case "gpt2":
			return []string{"c_attn", "mlp.c_proj"}
		}
		switch m.ModelType {
		case "qwen2", "qwen3", "gemma2", "gemma3_text":
			return []string{"q_proj", "v_proj", "down_proj"}
		}
		return []string{"k_proj", "v_proj", "down_proj"}
	}
	switch m.Family {
	case "bloom":
		return []string{"query_key_value"}
	case "gpt2":
		return []string{"c_attn"}
	}
	return []string{"q_proj", "v_proj"}
}

func dtypeBytes(name string) (int64, error) {
	switch strings.ToLower(name) {
	case "fp32", "float32", "f32":
		return 4, nil
	case "fp16", "float16", "f16", "half", "bf16", "bfloat16":
		return 2, nil
	}
	return 0, fmt.Errorf("peft: estimate: unknown dtype %q (fp32, fp16, bf16)", name)
}

// nf4BytesPerParam is bitsandbytes NF4 with double quantization: 4 bits
// per weight, an 8-bit absmax per block of 64, and an fp32 constant per
// block of 256 absmax values.
const nf4BytesPerParam = 0.5 + 1.0/64 + 4.0/(64*256)

// EstimateMemory sizes the peak memory of a training step of the model m:
//
//   - overhead: the framework (CUDA context, or libtorch's resident memory on CPU);
//   - weights: parameters × bytes of the dtype (fp16: an 8B model is 16 GB);
//     QLoRA stores the decoder layers' Linear weights in NF4; method
//     parameters are fp32, as PEFT keeps them;
//   - activations: per decoder layer, what autograd saves (below), times
//     layers, plus the fp32 logits and their loss intermediates
//     (4 · b · s · vocab · 4 bytes); with checkpointing, one hidden state
//     per layer plus one layer's activations;
//   - gradients: one per trainable parameter, in its dtype;
//   - optimizer: Adam keeps 2 states per trainable parameter (first and
//     second moment); with mixed precision, also an fp32 master copy;
//   - allocator (CPU): what malloc keeps beyond live tensors
//     (CPUAllocatorRetention).
//
// Activations per layer, in elements, for batch b, sequence s, hidden h,
// heads a, MLP width I (the seed's transformer formula, counted for this
// library's layers): LLaMA (RMSNorm, SwiGLU)
// s·b·h·(8 + 2·kv_heads/a) + 4·s·b·I + a·s²·b; BLOOM and GPT-2
// (LayerNorm, GELU) 8·s·b·h + 2·s·b·I + a·s²·b, times the bytes of the
// activation dtype. For GPT-2 shapes in 16 bits that is 32·sbh + 2·as²b
// bytes against Korthikanti et al.'s 34·sbh + 5·as²b, which adds dropout
// masks and the pre-softmax scores. As the seed notes say, LoRA (and every
// method here) stores as many activations as full fine-tuning: the
// gradient reaches the trainable weights through every layer above.
func EstimateMemory(m *ModelShape, o MemoryOptions) (*MemoryEstimate, error) {
	if o.Method == "" {
		o.Method = "full"
	}
	if o.R <= 0 && o.Method == "adalora" {
		o.R = 12 // PEFT's init_r
	}
	if o.R <= 0 {
		o.R = 8
	}
	if o.NumVirtualTokens <= 0 {
		o.NumVirtualTokens = 20
	}
	if o.ReductionFactor <= 0 {
		o.ReductionFactor = 16
	}
	if o.TrainableLayers <= 0 {
		o.TrainableLayers = 2
	}
	if o.Batch <= 0 {
		o.Batch = 1
	}
	if o.Seq <= 0 {
		o.Seq = 512
	}
	if o.DType == "" {
		o.DType = "fp32"
		if o.Method == "qlora" {
			o.DType = "bf16"
		}
	}
	if o.Optimizer == "" {
		o.Optimizer = "adamw"
	}
	wb, err := dtypeBytes(o.DType)
	if err != nil {
		return nil, err
	}
	var states int64
	switch o.Optimizer {
	case "adamw", "adam":
		states = 2
	case "sgd":
		states = 0
	case "momentum", "adagrad", "rmsprop":
		states = 1
	default:
		return nil, fmt.Errorf("peft: estimate: unknown optimizer %q (adamw, adam, sgd, momentum, adagrad, rmsprop)", o.Optimizer)
	}
	if o.Overhead == 0 {
		switch o.Device {
		case "", "cpu":
			o.Overhead = CPUOverhead
		case "cuda", "gpu":
			o.Overhead = CUDAOverhead
		default:
			return nil, fmt.Errorf("peft: estimate: unknown device %q (cpu, cuda)", o.Device)
		}
	}

	base := m.Params()
	layerTotal, layerLinear, layerBias := m.LayerParams()
	L, h := m.Layers, m.Hidden
	var added int64       // method parameters (fp32)
	var frozen int64      // method tensors that never train, fp32 (VeRA's shared projections)
	var baseTrain int64   // base parameters that train (in the weights' dtype)
	var frozenAdded int64 // method parameters that do not train (AdaLoRA's ranknum)
	targets := o.TargetModules
	if len(targets) == 0 {
		targets = defaultTargets(m, o.Method)
	}
	selected := func() ([]linearShape, error) {
		all := len(targets) == 1 && targets[0] == "all-linear"
		var out []linearShape
		known := map[string]bool{}
		for _, l := range m.linears() {
			known[l.name] = true
			for _, t := range targets {
				if all || t == l.name || (strings.HasSuffix(l.name, "."+t)) {
					out = append(out, l)
					break
				}
			}
		}
		if len(out) == 0 {
			names := make([]string, 0, len(known))
			for n := range known {
				names = append(names, n)
			}
			sort.Strings(names)
			return nil, fmt.Errorf("peft: estimate: target modules %v match no layer of a %s model (%s, or all-linear)", targets, m.Family, strings.Join(names, ", "))
		}
		return out, nil
	}
	switch o.Method {
	case "full":
		baseTrain = base
	case "lora", "qlora":
		ls, err := selected()
		if err != nil {
			return nil, err
		}
		for _, l := range ls {
			added += L * int64(o.R) * (l.in + l.out)
		}
	case "adalora": // A [r, in], E [r, 1], B [out, r] per layer, from init_r; ranknum (frozen) too
		ls, err := selected()
		if err != nil {
			return nil, err
		}
		for _, l := range ls {
			added += L * int64(o.R) * (l.in + l.out + 1)
			frozenAdded += L
		}
	case "ia3":
		ls, err := selected()
		if err != nil {
			return nil, err
		}
		for _, l := range ls {
			if l.feedfwd {
				added += L * l.in
			} else {
				added += L * l.out
			}
		}
	case "loha", "lokr": // LyCORIS: Linear layers only (GPT-2's are Conv1D)
		if m.Family == "gpt2" {
			return nil, fmt.Errorf("peft: estimate: %s wraps Linear layers; a gpt2 model's are Conv1D (PEFT has no %s for them)", o.Method, o.Method)
		}
		ls, err := selected()
		if err != nil {
			return nil, err
		}
		f := o.DecomposeFactor
		if f == 0 {
			f = -1
		}
		for _, l := range ls {
			if o.Method == "loha" { // hada_w1_a, hada_w2_a [out, r]; hada_w1_b, hada_w2_b [r, in]
				added += L * 2 * int64(o.R) * (l.in + l.out)
			} else {
				added += L * factor.LoKrLayout(int(l.in), int(l.out), o.R, f, o.DecomposeBoth).Params()
			}
		}
	case "oft", "boft", "hra":
		// orthogonal methods (R as each one's size parameter): OFT (PEFT
		// 0.10) R blocks of ⌈out/R⌉² per layer; BOFT, one butterfly factor
		// with boft_block_size R, in/R blocks of R² plus boft_s (out); HRA,
		// R vectors of in
		ls, err := selected()
		if err != nil {
			return nil, err
		}
		r := int64(o.R)
		for _, l := range ls {
			switch o.Method {
			case "oft":
				b := (l.out + r - 1) / r
				added += L * r * b * b
			case "boft":
				if l.in%r != 0 {
					return nil, fmt.Errorf("peft: estimate: boft: in_features %d of %s is not divisible by boft_block_size %d (--r)", l.in, l.name, r)
				}
				added += L * (l.in*r + l.out)
			case "hra":
				added += L * r * l.in
			}
		}
	case "prompt":
		added = int64(o.NumVirtualTokens) * h
	case "prefix":
		added = int64(o.NumVirtualTokens) * L * 2 * m.KVHeads * m.HeadDim
	case "adapter":
		r := h / int64(o.ReductionFactor)
		added = L * 2 * (h*r + r + r*h + h) // Houlsby: after attention and after the MLP
	case "bitfit":
		baseTrain = L * layerBias
		switch m.Family {
		case "bloom":
			baseTrain += 2 * h // final and embedding LayerNorm biases
		case "gpt2":
			baseTrain += h // final LayerNorm bias
		}
		if baseTrain == 0 {
			return nil, fmt.Errorf("peft: estimate: a %s model (%s) has no biases for BitFit to train", m.Family, m.ModelType)
		}
	case "freeze":
		n := min(int64(o.TrainableLayers), L)
		baseTrain = n * layerTotal
	case "vera", "fourierft", "lntuning": // VeRA: λ_b [out] + λ_d [r] per layer, projections r·(in+out) shared; FourierFT: n_frequency per layer; LN tuning: a copy of each targeted norm
		if o.Method == "fourierft" && len(o.TargetModules) == 0 && m.Family == "gpt2" {
			targets = []string{"mlp.c_proj"} // PEFT's FourierFT default for gpt2
		}
		if o.Method == "lntuning" {
			norms := map[string]bool{"norm": true, "ln_f": true, "final_layernorm": true, "input_layernorm": true, "post_attention_layernorm": true,
				"pre_feedforward_layernorm": true, "post_feedforward_layernorm": true, "ln_1": true, "ln_2": true}
			named := false
			for _, t := range o.TargetModules {
				named = named || norms[t]
			}
			if !named { // none given, or the linear targets of the other methods (--method all --targets …): PEFT's defaults
				targets = map[string][]string{"bloom": {"input_layernorm", "post_attention_layernorm", "ln_f"}, "gpt2": {"ln_1", "ln_2", "ln_f"},
					"qwen2": {"post_attention_layernorm"}, "gemma2": {"input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm", "post_feedforward_layernorm", "norm"},
				}[m.ModelType]
				if targets == nil {
					targets = []string{"input_layernorm", "post_attention_layernorm", "norm"}
				}
			}
			for _, t := range targets {
				switch {
				case t == "norm" || t == "ln_f" || t == "final_layernorm":
					added += m.normParams()
				case norms[t]:
					added += L * m.normParams()
				default:
					return nil, fmt.Errorf("peft: estimate: lntuning target %q is not a normalisation layer this estimate knows (input_layernorm, post_attention_layernorm, norm, ln_1, ln_2, ln_f, …)", t)
				}
			}
			break
		}
		ls, err := selected()
		if err != nil {
			return nil, err
		}
		nf := int64(o.NFrequency)
		if nf <= 0 {
			nf = 1000
		}
		var maxIn, maxOut int64
		for _, l := range ls {
			if o.Method == "vera" {
				added += L * (l.out + int64(o.R))
				maxIn, maxOut = max(maxIn, l.in), max(maxOut, l.out)
			} else {
				added += L * min(nf, l.in*l.out)
			}
		}
		frozen = int64(o.R) * (maxIn + maxOut)
	case "adaption-prompt": // per wrapped layer: adaption_prompt [1, len, h] and adaption_gate [1]
		if m.ModelType != "llama" && m.ModelType != "mistral" {
			return nil, fmt.Errorf("peft: estimate: adaption prompt supports llama and mistral models (PEFT's list), not %s", m.ModelType)
		}
		n, a := L, int64(10)
		if o.AdapterLayers > 0 {
			n = min(int64(o.AdapterLayers), L)
		}
		if o.AdapterLen > 0 {
			a = int64(o.AdapterLen)
		}
		added = n * (a*h + 1)
	case "multitask-prompt": // the shared table [P, h], prefix_task_cols [T, P, R], prefix_task_rows [T, R, h]
		t, r, p := int64(max(o.NumTasks, 1)), int64(max(o.NumRanks, 1)), int64(o.NumVirtualTokens)
		added = p*h + t*p*r + t*r*h
	default:
		return nil, fmt.Errorf("peft: estimate: unknown method %q (%s)", o.Method, strings.Join(Methods, ", "))
	}

	e := &MemoryEstimate{Method: o.Method, Params: base + added + frozenAdded, Trainable: baseTrain + added, Overhead: o.Overhead}
	if o.Method == "qlora" {
		q := L * layerLinear
		e.Weights = int64(float64(q)*nf4BytesPerParam) + (base-q)*wb + added*4
	} else {
		e.Weights = base*wb + (added+frozenAdded)*4
	}
	e.Weights += frozen * 4
	e.Gradients = baseTrain*wb + added*4
	stateBytes := int64(4)
	if wb < 4 && !o.MixedPrecision {
		stateBytes = wb // pure 16-bit training keeps states in 16 bits
	}
	e.OptimizerStates = states * (baseTrain*stateBytes + added*4)
	if o.MixedPrecision && wb < 4 {
		e.OptimizerStates += baseTrain * 4 // fp32 master weights
	}
	e.Activations = m.activations(o.Batch, o.Seq, wb, o.Checkpointing)
	if o.Method == "prompt" || o.Method == "multitask-prompt" { // the virtual tokens are positions too
		e.Activations = m.activations(o.Batch, o.Seq+int64(o.NumVirtualTokens), wb, o.Checkpointing)
	}
	if o.Device == "" || o.Device == "cpu" {
		seq := o.Seq
		if o.Method == "prompt" || o.Method == "multitask-prompt" {
			seq += int64(o.NumVirtualTokens)
		}
		e.Allocator = int64(CPUAllocatorRetention * float64(m.heapActivations(o.Batch, seq, wb, o.Checkpointing)))
	}
	e.Total = e.Overhead + e.Weights + e.Activations + e.Gradients + e.OptimizerStates + e.Allocator
	return e, nil
}

// LayerActivations is the number of activation elements one decoder
// layer saves for backward at batch b and sequence s (see EstimateMemory).
func (m *ModelShape) LayerActivations(b, s int64) int64 {
	h, I, a := m.Hidden, m.Intermediate, m.Heads
	if m.Family == "llama" || m.Family == "gemma" {
		return s*b*h*8 + 2*s*b*m.KVHeads*m.HeadDim + 4*s*b*I + a*s*s*b
	}
	return 8*s*b*h + 2*s*b*I + a*s*s*b
}

// activations is the activation bytes of a step (see EstimateMemory).
func (m *ModelShape) activations(b, s, bytes int64, checkpointing bool) int64 {
	layer := m.LayerActivations(b, s) * bytes
	head := 4 * b * s * m.Vocab * 4 // fp32 logits, their shifted copy, log-softmax, its gradient
	if checkpointing {
		return m.Layers*b*s*m.Hidden*bytes + layer + head
	}
	return m.Layers*layer + head
}

// glibcMmapMax is glibc's largest dynamic mmap threshold on 64-bit
// systems: larger blocks are always mmapped and go back to the system
// when freed.
const glibcMmapMax = 32 << 20

// heapActivations is the part of the activations made of blocks that
// glibc serves from its heap (at most glibcMmapMax bytes each): the layers'
// tensors, and the logits' when they are that small.
func (m *ModelShape) heapActivations(b, s, bytes int64, checkpointing bool) int64 {
	act := m.activations(b, s, bytes, checkpointing)
	if copy := b * s * m.Vocab * 4; copy > glibcMmapMax {
		act -= 4 * copy
	}
	return act
}

// Table formats estimates as a text table, one row per method, sizes in
// GiB.
func Table(es []*MemoryEstimate) string {
	var sb strings.Builder
	gib := func(v int64) string { return fmt.Sprintf("%.2f", float64(v)/(1<<30)) }
	rows := [][]string{{"method", "trainable", "trainable%", "framework", "weights", "activations", "gradients", "optimizer", "allocator", "total GiB"}}
	for _, e := range es {
		rows = append(rows, []string{e.Method, Commas(e.Trainable), fmt.Sprintf("%.4f", 100*float64(e.Trainable)/float64(e.Params)),
			gib(e.Overhead), gib(e.Weights), gib(e.Activations), gib(e.Gradients), gib(e.OptimizerStates), gib(e.Allocator), gib(e.Total)})
	}
	width := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(c))
		}
	}
	for _, r := range rows {
		for i, c := range r {
			if i == 0 {
				fmt.Fprintf(&sb, "%-*s", width[i], c)
			} else {
				fmt.Fprintf(&sb, "  %*s", width[i], c)
			}
		}
		sb.WriteByte('\n')
	}
	return sb.String()
}
