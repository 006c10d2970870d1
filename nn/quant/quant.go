// Package quant is 4-bit weight quantization for QLoRA: bitsandbytes'
// Linear4bit for this library's module tree.
//
// A Linear here keeps its weight as 4-bit codes, two per byte, with one
// absmax scale per block of 64 consecutive weights (row-major), the codes
// being positions in a 16-value codebook: NF4 (the QLoRA paper's
// normal-float quantiles) or FP4. With double quantization the absmax
// scales are themselves stored as 8-bit codes of bitsandbytes' signed
// dynamic map in blocks of 256, around their mean: about 4.13 bits per
// weight instead of 4.5 (0.516 bytes instead of 0.5625). Forward
// dequantizes the weight on the fly into the compute dtype (float32 by
// default) and runs a plain linear, so the model's resident weights stay
// 4-bit; intermediates are dropped as soon as the layer's output exists.
//
//	m, err := llama.LoadQuantized(dir, quant.Config{UseDoubleQuant: true}) // every Linear but lm_head in NF4
//	model, err := lora.Wrap(m, &lora.Config{R: 8, LoraAlpha: 16, TargetModules: lora.Regex("all-linear")})
//
// Quantization follows bitsandbytes' reference implementation
// (backends/default/ops.py): scaled = clamp(x · (1/absmax), −1, 1), code =
// the nearest codebook value (the first on ties), element 2j in the high
// nibble; dequantized w = code · absmax in float32. The one deliberate
// difference: a block of zeros gets absmax 0 and dequantizes to zeros
// (bitsandbytes divides by zero there).
//
// Parameter counts treat a packed weight as PEFT's
// print_trainable_parameters does a Params4bit (packed numel × 2 × the
// 1-byte storage size: each weight once). A 4-bit model cannot be
// saved as is (nn refuses packed parameters): merge adapters and
// Dequantize it first, or save the adapter alone, which loads on the
// full-precision base too.
package quant

import (
	"fmt"
	"math"
	"strings"

	"github.com/gopeft/peft/tensor"
)

// Type is a 4-bit codebook: bitsandbytes' quant_type.
type Type string

const (
	// NF4 is the QLoRA paper's 4-bit NormalFloat: quantiles of N(0, 1)
	// normalised to [−1, 1], with an exact 0.
	NF4 Type = "nf4"
	// FP4 is a 4-bit float (sign, 2-bit exponent, 1-bit mantissa)
	// normalised to [−1, 1].
	FP4 Type = "fp4"
)

// Config chooses how and which layers are quantized: the fields of
// transformers' BitsAndBytesConfig for 4-bit loading.
type Config struct {
	// QuantType is the codebook (bnb_4bit_quant_type); empty means NF4, the
	// QLoRA recipe (transformers' own default is fp4).
	QuantType Type
	// UseDoubleQuant quantizes the absmax scales to 8 bits in blocks of 256
	// (bnb_4bit_use_double_quant).
	UseDoubleQuant bool
	// BlockSize is the number of weights per absmax: a power of two from
	// 32 to 4096; 0 means 64 (bitsandbytes' 4-bit default).
	BlockSize int64
	// ComputeDType is the dtype the weight is dequantized to and the
	// matmul runs in (bnb_4bit_compute_dtype): "float32" (default),
	// "bfloat16" or "float16" where libtorch has kernels for them (CPU
	// builds run bfloat16 but not float16: NewLinear and Validate say so).
	// The output comes back in the input's dtype.
	ComputeDType string
	// Modules limits quantization to these Linear layers: a name matches a
	// layer whose path is the name, ends with "."+name or has it as a run
	// of whole path components ("q_proj", "mlp", "layers.0"). Empty means
	// every Linear.
	Modules []string
	// SkipModules leaves these layers in float, matched the same way
	// (llm_int8_skip_modules). nil means []string{"lm_head"}, as
	// transformers keeps the output layer in float; an empty, non-nil
	// slice skips nothing.
	SkipModules []string
	// EmbeddingDType stores the input embedding tables in "bfloat16" (or
	// "float16") instead of float32 — what transformers' torch_dtype does
	// to the layers a 4-bit model keeps in float. The model's forward must
	// widen the looked-up rows (LLaMA's first RMSNorm and residual do).
	// Empty keeps float32.
	EmbeddingDType string
}

// withDefaults fills zero fields and validates.
func (c Config) withDefaults() (Config, error) {
	if c.QuantType == "" {
		c.QuantType = NF4
	}
	if c.QuantType != NF4 && c.QuantType != FP4 {
		return c, fmt.Errorf("quant: quant_type %q: want %q or %q", c.QuantType, NF4, FP4)
	}
	if c.BlockSize == 0 {
		c.BlockSize = 64
	}
	if c.BlockSize < 32 || c.BlockSize > 4096 || c.BlockSize&(c.BlockSize-1) != 0 {
		return c, fmt.Errorf("quant: block size %d: want a power of two from 32 to 4096", c.BlockSize)
	}
	if _, err := ParseDType(c.ComputeDType); err != nil {
		return c, fmt.Errorf("quant: compute dtype: %w", err)
	}
	if c.EmbeddingDType != "" {
		if _, err := ParseDType(c.EmbeddingDType); err != nil {
			return c, fmt.Errorf("quant: embedding dtype: %w", err)
		}
	}
	if c.SkipModules == nil {
		c.SkipModules = []string{"lm_head"}
	}
	return c, nil
}

// Validate reports a bad field, and a compute dtype this libtorch cannot
// run a linear in (CPU builds have no float16 matmul).
func (c Config) Validate() error {
	c, err := c.withDefaults()
	if err != nil {
		return err
	}
	dt, _ := ParseDType(c.ComputeDType)
	return checkCompute(dt)
}

// Selects reports whether the Linear layer at path (an HF module path such
// as "model.layers.0.self_attn.q_proj") is to be quantized under c.
func (c Config) Selects(path string) bool {
	skip := c.SkipModules
	if skip == nil {
		skip = []string{"lm_head"}
	}
	for _, n := range skip {
		if matchModule(path, n) {
			return false
		}
	}
	if len(c.Modules) == 0 {
		return true
	}
	for _, n := range c.Modules {
		if matchModule(path, n) {
			return true
		}
	}
	return false
}

func matchModule(path, name string) bool {
	if name == "" {
		return false
	}
	return path == name || strings.HasSuffix(path, "."+name) ||
		strings.HasPrefix(path, name+".") || strings.Contains(path, "."+name+".")
}

// ParseDType reads a dtype name as transformers writes it ("float32",
// "bfloat16", "float16", also "fp32", "bf16", "fp16"); empty is float32.
func ParseDType(name string) (tensor.DType, error) {
	switch strings.TrimPrefix(strings.ToLower(name), "torch.") {
	case "", "float32", "fp32", "float":
		return tensor.Float32, nil
	case "bfloat16", "bf16":
		return tensor.BFloat16, nil
	case "float16", "fp16", "half":
		return tensor.Float16, nil
	}
	return 0, fmt.Errorf("unknown dtype %q (want float32, bfloat16 or float16)", name)
}

// nf4 is bitsandbytes' get_4bit_type("nf4"), index 0..15.
var nf4 = [16]float32{
	-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
	-0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
	0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
	0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
}

// fp4Raw is get_4bit_type("fp4") before normalisation by its largest
// magnitude (12): index bits are sign | 2-bit exponent | 1-bit mantissa.
var fp4Raw = [16]float32{0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3}

// Codebook returns the 16 float32 values a 4-bit code stands for
// (bitsandbytes' quant_map), indexed by the code.
func Codebook(t Type) []float32 {
	out := make([]float32, 16)
	switch t {
	case NF4, "":
		copy(out, nf4[:])
	case FP4:
		for i, v := range fp4Raw {
			out[i] = v / 12
		}
		out[8] = float32(math.Copysign(0, -1))
	default:
		return nil
	}
	return out
}

// DynamicMap returns bitsandbytes' signed 8-bit dynamic map
// (create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)), the
// code double quantization stores absmax scales with: for i = 0..6 the
// 2^i midpoints of linspace(0.1, 1, 2^i+1) scaled by ±10^(i−6), plus 0 and
// 1, sorted (256 values). The arithmetic is float32 as in torch (torch's
// vectorised linspace may differ in the last bit of a few values).
func DynamicMap() []float32 {
	out := make([]float32, 0, 256)
	for i := 0; i < 7; i++ {
		steps := (1 << i) + 1
		b := linspace32(0.1, 1, steps)
		scale := float32(math.Pow10(i - 6))
		for k := 0; k+1 < steps; k++ {
			mean := float32(b[k]+b[k+1]) / 2
			v := float32(scale * mean)
			out = append(out, v, -v)
		}
	}
	out = append(out, 0, 1)
	sortFloat32(out)
	return out
}

// linspace32 is torch.linspace in float32: start + step·i for the first
// half, end − step·(steps−1−i) for the second.
func linspace32(start, end float32, steps int) []float32 {
	out := make([]float32, steps)
	if steps == 1 {
		out[0] = start
		return out
	}
	step := float32(end-start) / float32(steps-1)
	half := steps / 2
	for i := range out {
		if i < half {
			out[i] = start + float32(step*float32(i))
		} else {
			out[i] = end - float32(step*float32(steps-1-i))
		}
	}
	return out
}

func sortFloat32(v []float32) {
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && v[j] < v[j-1]; j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
}
