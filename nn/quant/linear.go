package quant

import (
	"fmt"
	"sync"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// NestedBlockSize is the block size of double quantization (fixed at 256
// in bitsandbytes).
const NestedBlockSize = 256

// Linear is a 4-bit linear layer (bitsandbytes' Linear4bit): y = x Wᵀ + b
// with W dequantized on the fly. Weight holds the packed codes, uint8
// [⌈n/2⌉, 1] for the n = out·in weights (element 2j in the high nibble),
// and counts as 2·⌈n/2⌉ parameters, PEFT's count for a Params4bit (n for
// every even n); Bias stays in float. The quantization
// statistics (bitsandbytes' QuantState) are buffers, not parameters.
type Linear struct {
	Weight *nn.Param `nn:"weight"`
	Bias   *nn.Param `nn:"bias"`

	out, in   int64
	quantType Type
	blockSize int64
	compute   tensor.DType
	// absmax is one float32 scale per block, or with double quantization
	// one uint8 code of the dynamic map per block, whose value is
	// code·nestedAbsmax[b/256] + nestedOffset.
	absmax       *tensor.T
	nestedAbsmax *tensor.T // float32 [⌈blocks/256⌉]
	nestedOffset *tensor.T // float32 [1]: the mean absmax
}

// NewLinear quantizes w ([out, in], any float dtype; not consumed) into a
// 4-bit layer with bias (which the layer takes over; nil for none).
func NewLinear(w *tensor.T, bias *nn.Param, cfg Config) (*Linear, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	compute, _ := ParseDType(cfg.ComputeDType)
	if err := checkCompute(compute); err != nil {
		return nil, err
	}
	sh := w.Shape()
	if len(sh) != 2 {
		return nil, fmt.Errorf("quant: weight of shape %v, want [out, in]", sh)
	}
	if dt := w.DType(); dt != tensor.Float32 && dt != tensor.Float16 && dt != tensor.BFloat16 && dt != tensor.Float64 {
		return nil, fmt.Errorf("quant: weight of dtype %s, want a float dtype", dt)
	}
	if bias != nil && (bias.T().Dim() != 1 || bias.Shape()[0] != sh[0]) {
		return nil, fmt.Errorf("quant: bias of shape %v for a weight of shape %v", bias.Shape(), sh)
	}
	s := tensor.NoGradScope()
	defer s.Close()
	flat := s.Reshape(s.To(w, tensor.Float32), -1)
	codes, absmax := quantizeBlocks(s, flat, Codebook(cfg.QuantType), cfg.BlockSize)
	packed := pack(s, codes, flat.Numel())
	l := &Linear{out: sh[0], in: sh[1], quantType: cfg.QuantType, blockSize: cfg.BlockSize, compute: compute, Bias: bias}
	if cfg.UseDoubleQuant {
		offset := s.Mean(absmax, false, 0)
		q, nested := quantizeBlocks(s, s.Sub(absmax, offset), DynamicMap(), NestedBlockSize)
		q = s.Contiguous(s.Narrow(q, 0, 0, absmax.Numel())) // drop the padding codes
		l.absmax, l.nestedAbsmax, l.nestedOffset = s.Keep(q), s.Keep(nested), s.Keep(s.Reshape(offset, 1))
	} else {
		l.absmax = s.Keep(absmax)
	}
	if err := s.Err(); err != nil {
		l.FreeBuffers()
		return nil, fmt.Errorf("quant: %w", err)
	}
	// PEFT's get_nb_trainable_parameters counts a Params4bit as numel · 2 ·
	// the storage element size (1 for uint8): the out·in weights, rounded up
	// to even.
	l.Weight = nn.NewPackedParam(s.Keep(packed), 2*packed.Numel())
	return l, nil
}

// computeSupport caches, per compute dtype, whether libtorch runs a linear
// in it (CPU builds have no float16 matmul).
var computeSupport sync.Map // tensor.DType → error

// checkCompute runs a 1×2·2×2 linear in dt once and reports libtorch's
// refusal as an error naming the dtype.
func checkCompute(dt tensor.DType) error {
	if dt == tensor.Float32 {
		return nil
	}
	if v, ok := computeSupport.Load(dt); ok {
		err, _ := v.(error)
		return err
	}
	s := tensor.NoGradScope()
	s.Linear(s.To(s.Ones(tensor.Float32, 1, 2), dt), s.To(s.Ones(tensor.Float32, 2, 2), dt), nil)
	err := s.Err()
	s.Close()
	if err != nil {
		err = fmt.Errorf("quant: compute dtype %s: this libtorch cannot run a linear in it (%v); use float32 or bfloat16", dt, err)
	}
	computeSupport.Store(dt, err)
	return err
}

// quantizeBlocks is bitsandbytes' blockwise quantization of flat (float32
// [n]) against code: per block of bs, absmax = max|x|, scaled = clamp(x ·
// (1/absmax), −1, 1), and the position of the nearest code value (the
// first on ties). It returns the codes as uint8 [⌈n/bs⌉·bs] (the padding
// past n holds the code of 0) and absmax float32 [⌈n/bs⌉].
func quantizeBlocks(s *tensor.Scope, flat *tensor.T, code []float32, bs int64) (codes, absmax *tensor.T) {
	n := flat.Numel()
	blocks := (n + bs - 1) / bs
	if pad := blocks*bs - n; pad > 0 {
		flat = s.Cat(0, flat, s.Zeros(tensor.Float32, pad))
	}
	x := s.View(flat, blocks, bs)
	absmax = s.Amax(s.Abs(x), false, 1)
	inv := s.MaskedFill(s.Reciprocal(absmax), s.EqScalar(absmax, 0), 0) // a zero block stays zero
	scaled := s.Reshape(s.Clamp(s.Mul(x, s.Unsqueeze(inv, 1)), -1, 1), -1, 1)
	table := s.View(s.FromFloat32(code, int64(len(code))), 1, -1)
	// nearest code in chunks: the [chunk, len(code)] distance matrix stays small
	chunk := int64(1<<22) / int64(len(code))
	total := blocks * bs
	var parts []*tensor.T
	for start := int64(0); start < total && s.Err() == nil; start += chunk {
		m := min(chunk, total-start)
		mark := s.Mark()
		idx := s.To(s.Argmin(s.Abs(s.Sub(s.Narrow(scaled, 0, start, m), table)), 1, false), tensor.Uint8)
		s.FreeSince(mark, idx)
		parts = append(parts, idx)
	}
	if len(parts) == 1 {
		return parts[0], absmax
	}
	return s.Cat(0, parts...), absmax
}

// pack puts the first n codes (rounded up to even) two per byte, element 2j
// in the high nibble: uint8 [⌈n/2⌉, 1].
func pack(s *tensor.Scope, codes *tensor.T, n int64) *tensor.T {
	half := (n + 1) / 2
	pairs := s.View(s.Narrow(codes, 0, 0, 2*half), half, 2)
	hi := s.ShiftLeft(s.Select(pairs, 1, 0), 4)
	return s.View(s.Or(hi, s.Select(pairs, 1, 1)), half, 1)
}

// tables caches the constant lookup tables, shared by every layer.
var tables struct {
	sync.Mutex
	pairs map[Type]*tensor.T // [256, 2]: a packed byte's two code values
	dyn   *tensor.T          // [256]: the dynamic map
}

func constant(make func(s *tensor.Scope) *tensor.T) (*tensor.T, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	t := make(s)
	if err := s.Err(); err != nil {
		return nil, err
	}
	return s.Keep(t), nil
}

// pairTable maps a packed byte b to (code[b>>4], code[b&15]).
func pairTable(t Type) (*tensor.T, error) {
	tables.Lock()
	defer tables.Unlock()
	if p, ok := tables.pairs[t]; ok {
		return p, nil
	}
	code := Codebook(t)
	v := make([]float32, 512)
	for b := 0; b < 256; b++ {
		v[2*b], v[2*b+1] = code[b>>4], code[b&15]
	}
	p, err := constant(func(s *tensor.Scope) *tensor.T { return s.FromFloat32(v, 256, 2) })
	if err != nil {
		return nil, err
	}
	if tables.pairs == nil {
		tables.pairs = map[Type]*tensor.T{}
	}
	tables.pairs[t] = p
	return p, nil
}

func dynTable() (*tensor.T, error) {
	tables.Lock()
	defer tables.Unlock()
	if tables.dyn != nil {
		return tables.dyn, nil
	}
	d := DynamicMap()
	t, err := constant(func(s *tensor.Scope) *tensor.T { return s.FromFloat32(d, int64(len(d))) })
	if err != nil {
		return nil, err
	}
	tables.dyn = t
	return t, nil
}

// blocks is the number of absmax scales.
func (l *Linear) blocks() int64 { return (l.out*l.in + l.blockSize - 1) / l.blockSize }

// Absmax returns the per-block scales as float32 [blocks] in scope s
// (decoded from their 8-bit codes under double quantization).
func (l *Linear) Absmax(s *tensor.Scope) *tensor.T {
	if l.nestedAbsmax == nil {
		return l.absmax
	}
	dyn, err := dynTable()
	if err != nil {
		return s.Fail(fmt.Errorf("quant: %w", err))
	}
	blocks := l.blocks()
	v := s.IndexSelect(dyn, 0, s.To(l.absmax, tensor.Int32))
	groups := l.nestedAbsmax.Numel()
	if pad := groups*NestedBlockSize - blocks; pad > 0 {
		v = s.Cat(0, v, s.Zeros(tensor.Float32, pad))
	}
	v = s.Mul(s.View(v, groups, NestedBlockSize), s.Unsqueeze(l.nestedAbsmax, 1))
	return s.Add(s.Narrow(s.Reshape(v, -1), 0, 0, blocks), l.nestedOffset)
}

// Dequantize returns the weight as float32 [out, in] in scope s:
// code · absmax of its block.
func (l *Linear) Dequantize(s *tensor.Scope) *tensor.T {
	if !l.Weight.T().Defined() {
		return s.Failf("quant: dequantize a freed layer")
	}
	pairs, err := pairTable(l.quantType)
	if err != nil {
		return s.Fail(fmt.Errorf("quant: %w", err))
	}
	n := l.out * l.in
	blocks := l.blocks()
	codes := s.Reshape(s.IndexSelect(pairs, 0, s.To(s.Reshape(l.Weight.T(), -1), tensor.Int32)), -1)
	if codes.Numel() != blocks*l.blockSize {
		codes = s.Narrow(codes, 0, 0, n)
		if pad := blocks*l.blockSize - n; pad > 0 {
			codes = s.Cat(0, codes, s.Zeros(tensor.Float32, pad))
		}
	}
	w := s.Mul(s.View(codes, blocks, l.blockSize), s.Unsqueeze(l.Absmax(s), 1))
	if blocks*l.blockSize != n {
		return s.View(s.Narrow(s.Reshape(w, -1), 0, 0, n), l.out, l.in)
	}
	return s.View(w, l.out, l.in)
}

// Forward implements nn.Layer: x in the compute dtype against the
// dequantized weight, the result in x's dtype. The dequantized weight is
// dropped from s right away (autograd keeps what backward needs).
func (l *Linear) Forward(s *tensor.Scope, x *tensor.T) *tensor.T {
	mark := s.Mark()
	w := l.Dequantize(s)
	dt := x.DType()
	xc := x
	if dt != l.compute {
		xc = s.To(x, l.compute)
	}
	if l.compute != tensor.Float32 {
		w = s.To(w, l.compute)
	}
	var b *tensor.T
	if l.Bias != nil {
		b = l.Bias.T()
		if b.DType() != l.compute {
			b = s.To(b, l.compute)
		}
	}
	y := s.Linear(xc, w, b)
	if y != nil && y.DType() != dt {
		y = s.To(y, dt)
	}
	s.FreeSince(mark, y)
	return y
}

// Dequantized returns an nn.Linear with the dequantized float32 weight
// (frozen) and this layer's bias (shared, not copied).
func (l *Linear) Dequantized() (*nn.Linear, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	w := s.Contiguous(l.Dequantize(s))
	if err := s.Err(); err != nil {
		return nil, err
	}
	return &nn.Linear{Weight: nn.NewParam(s.Keep(w)), Bias: l.Bias}, nil
}

// InFeatures is the input width.
func (l *Linear) InFeatures() int64 { return l.in }

// OutFeatures is the output width.
func (l *Linear) OutFeatures() int64 { return l.out }

// QuantType is the layer's codebook.
func (l *Linear) QuantType() Type { return l.quantType }

// BlockSize is the number of weights per absmax.
func (l *Linear) BlockSize() int64 { return l.blockSize }

// DoubleQuant reports whether the absmax scales are 8-bit codes.
func (l *Linear) DoubleQuant() bool { return l.nestedAbsmax != nil }

// ComputeDType is the dtype forward runs the matmul in.
func (l *Linear) ComputeDType() tensor.DType { return l.compute }

// StorageBytes is what the weight occupies: the packed codes, the absmax
// scales and, with double quantization, the nested scales and offset (the
// bias and the shared code tables are not included).
func (l *Linear) StorageBytes() int64 {
	n := tensorBytes(l.Weight.T()) + tensorBytes(l.absmax)
	return n + tensorBytes(l.nestedAbsmax) + tensorBytes(l.nestedOffset)
}

func tensorBytes(t *tensor.T) int64 {
	if !t.Defined() {
		return 0
	}
	return t.Numel() * int64(t.DType().Size())
}

// FreeBuffers implements nn.BufferFreer: it releases the quantization
// statistics (nn.FreeParams frees the packed weight and the bias).
func (l *Linear) FreeBuffers() {
	l.absmax.Free()
	l.nestedAbsmax.Free()
	l.nestedOffset.Free()
	l.absmax, l.nestedAbsmax, l.nestedOffset = nil, nil, nil
}

// TypeName prints bitsandbytes' class name in the module tree.
func (*Linear) TypeName() string { return "Linear4bit" }

// ExtraRepr prints like PyTorch's Linear4bit.
func (l *Linear) ExtraRepr() string {
	b := "False"
	if l.Bias != nil {
		b = "True"
	}
	return fmt.Sprintf("in_features=%d, out_features=%d, bias=%s", l.in, l.out, b)
}
