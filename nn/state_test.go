package nn_test

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func openSet(t *testing.T, paths ...string) *safetensors.Set {
	t.Helper()
	set, err := safetensors.OpenFiles(paths...)
	require.NoError(t, err)
	t.Cleanup(func() { set.Close() })
	return set
}

func writeFile(t *testing.T, path string, ts ...safetensors.Tensor) string {
	t.Helper()
	require.NoError(t, safetensors.Write(path, ts, nil))
	return path
}

func TestSaveLoadRoundTrip(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	src := newTestModel(s, 1)
	defer src.free()
	dst := newTestModel(s, 2)
	defer dst.free()

	want := paramBytes(t, src)
	before := paramBytes(t, dst)
	for name := range want {
		require.NotEqual(t, want[name], before[name], "%s: the two models must start different", name)
	}

	path := filepath.Join(t.TempDir(), "model.safetensors")
	require.NoError(t, nn.SaveState(src, path, map[string]string{"format": "pt"}))

	// The file holds every parameter once under its full name (the tied
	// head.weight is not written twice), as float32 little-endian.
	f, err := safetensors.Open(path)
	require.NoError(t, err)
	wantNames := names(nn.NamedParams(src))
	sort.Strings(wantNames)
	got := f.Names()
	sort.Strings(got)
	require.Equal(t, wantNames, got)
	require.Equal(t, map[string]string{"format": "pt"}, f.Metadata())
	info, ok := f.Info("layers.0.proj.weight")
	require.True(t, ok)
	require.Equal(t, safetensors.F32, info.DType)
	require.Equal(t, []int64{testD, testD}, info.Shape)
	data, err := f.Data("scale")
	require.NoError(t, err)
	require.Equal(t, f32le(0.5, -1.25), data)
	require.NoError(t, f.Close())

	require.NoError(t, nn.LoadState(dst, openSet(t, path), nn.LoadOptions{}))
	require.Equal(t, want, paramBytes(t, dst))
	require.Same(t, dst.Embed.Weight, dst.Head.Weight, "the tie survives a load")
	for _, np := range nn.NamedParams(dst) {
		require.Equal(t, tensor.Float32, np.Param.DType(), np.Name)
		require.False(t, np.Param.RequiresGrad(), np.Name)
	}

	// Trainable: every loaded parameter requires grad.
	require.NoError(t, nn.LoadState(dst, openSet(t, path), nn.LoadOptions{Trainable: true}))
	tr, all := nn.CountParams(dst)
	require.Equal(t, all, tr)
	require.Equal(t, want, paramBytes(t, dst))

	// The model still computes after its tensors were swapped.
	y := dst.Head.Forward(s, s.FromFloat32([]float32{1, 0, 0, 0}, 1, testD))
	require.NoError(t, s.Err())
	require.Equal(t, []int64{1, testV}, y.Shape())
}

func TestStateTensorsAndPrefix(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	src := newTestModel(s, 1)
	defer src.free()
	dst := newTestModel(s, 2)
	defer dst.free()

	const prefix = "base_model.model."
	st, err := nn.StateTensors(nn.NamedParams(src), prefix)
	require.NoError(t, err)
	require.Len(t, st, 8)
	require.Equal(t, prefix+"scale", st[0].Name)
	require.Equal(t, safetensors.F32, st[0].DType)
	require.Equal(t, []int64{2}, st[0].Shape)
	require.Equal(t, f32le(0.5, -1.25), st[0].Data)
	require.Equal(t, prefix+"layers.1.proj.bias", st[5].Name)

	// A key outside the prefix belongs to another sub-tree and is not
	// "unexpected".
	st = append(st, safetensors.Tensor{Name: "other.weight", DType: safetensors.F32, Shape: []int64{1}, Data: f32le(9)})
	path := writeFile(t, filepath.Join(t.TempDir(), "adapter.safetensors"), st...)

	require.NoError(t, nn.LoadState(dst, openSet(t, path), nn.LoadOptions{Prefix: prefix}))
	require.Equal(t, paramBytes(t, src), paramBytes(t, dst))

	// Without the prefix nothing matches.
	err = nn.LoadState(dst, openSet(t, path), nn.LoadOptions{})
	require.Error(t, err)
	require.Contains(t, err.Error(), path)
	require.Contains(t, err.Error(), `"scale"`)
}

// halfModel is a Linear [2, 4] with bias, for the half-precision files.
func halfModel(s *tensor.Scope) *nn.Linear {
	return &nn.Linear{Weight: param(s, make([]float32, 8), 2, 4), Bias: param(s, []float32{7, 7}, 2)}
}

// Values exact in float16, with their IEEE half bit patterns written by hand.
var (
	f16Vals = []float32{1, -2, 0.5, 0.25, 3, -0.125, 65504, 1.0 / (1 << 24)}
	f16Bits = []uint16{0x3C00, 0xC000, 0x3800, 0x3400, 0x4200, 0xB000, 0x7BFF, 0x0001}
	// Values exact in bfloat16 (the top half of their float32 bits).
	bf16Vals = []float32{1.5, -3}
	bf16Bits = []uint16{0x3FC0, 0xC040}
)

func TestLoadHalfPrecision(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	path := writeFile(t, filepath.Join(t.TempDir(), "half.safetensors"),
		safetensors.Tensor{Name: "weight", DType: safetensors.F16, Shape: []int64{2, 4}, Data: u16le(f16Bits...)},
		safetensors.Tensor{Name: "bias", DType: safetensors.BF16, Shape: []int64{2}, Data: u16le(bf16Bits...)},
	)

	// Into float32 parameters (the default): exact values.
	l := halfModel(s)
	defer nn.FreeParams(l)
	require.NoError(t, nn.LoadState(l, openSet(t, path), nn.LoadOptions{}))
	require.Equal(t, tensor.Float32, l.Weight.DType())
	require.Equal(t, tensor.Float32, l.Bias.DType())
	require.Equal(t, f32le(f16Vals...), s.Bytes(l.Weight.T()))
	require.Equal(t, f32le(bf16Vals...), s.Bytes(l.Bias.T()))

	// Kept in float16: the weight's bytes are the file's, and the BF16 bias
	// converts to the half patterns of 1.5 and -3.
	h := halfModel(s)
	defer nn.FreeParams(h)
	require.NoError(t, nn.LoadState(h, openSet(t, path), nn.LoadOptions{DType: tensor.Float16}))
	require.Equal(t, tensor.Float16, h.Weight.DType())
	require.Equal(t, u16le(f16Bits...), s.Bytes(h.Weight.T()))
	require.Equal(t, u16le(0x3E00, 0xC200), s.Bytes(h.Bias.T()))

	// TensorFromFile alone: no conversion with dt 0, conversion otherwise.
	set := openSet(t, path)
	x, err := nn.TensorFromFile(s, set, "bias", 0)
	require.NoError(t, err)
	require.Equal(t, tensor.BFloat16, x.DType())
	require.Equal(t, u16le(bf16Bits...), s.Bytes(x))
	x, err = nn.TensorFromFile(s, set, "weight", tensor.Float32)
	require.NoError(t, err)
	require.Equal(t, f32le(f16Vals...), s.Bytes(x))
	_, err = nn.TensorFromFile(s, set, "nope", 0)
	require.Error(t, err)
	require.Contains(t, err.Error(), `"nope"`)
	require.NoError(t, s.Err())
}

// linFile writes a Linear [2, 3] + bias [2] state with the given changes.
func linFile(t *testing.T, dir, name string, edit func(map[string]safetensors.Tensor)) string {
	t.Helper()
	m := map[string]safetensors.Tensor{
		"weight": {Name: "weight", DType: safetensors.F32, Shape: []int64{2, 3}, Data: f32le(1, 2, 3, 4, 5, 6)},
		"bias":   {Name: "bias", DType: safetensors.F32, Shape: []int64{2}, Data: f32le(-1, -2)},
	}
	if edit != nil {
		edit(m)
	}
	var ts []safetensors.Tensor
	for _, x := range m {
		ts = append(ts, x)
	}
	return writeFile(t, filepath.Join(dir, name), ts...)
}

func TestLoadStateErrors(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	dir := t.TempDir()
	l := &nn.Linear{Weight: param(s, []float32{9, 9, 9, 9, 9, 9}, 2, 3), Bias: param(s, []float32{8, 8}, 2)}
	defer nn.FreeParams(l)
	orig := paramBytes(t, l)

	cases := []struct {
		name  string
		edit  func(map[string]safetensors.Tensor)
		opts  nn.LoadOptions
		wants []string
	}{
		{"missing", func(m map[string]safetensors.Tensor) { delete(m, "bias") }, nn.LoadOptions{},
			[]string{`"bias"`, "missing"}},
		{"shape", func(m map[string]safetensors.Tensor) {
			m["bias"] = safetensors.Tensor{Name: "bias", DType: safetensors.F32, Shape: []int64{3}, Data: f32le(1, 2, 3)}
		}, nn.LoadOptions{}, []string{`"bias"`, "[3]", "[2]"}},
		{"unexpected", func(m map[string]safetensors.Tensor) {
			m["extra.weight"] = safetensors.Tensor{Name: "extra.weight", DType: safetensors.F32, Shape: []int64{1}, Data: f32le(1)}
		}, nn.LoadOptions{}, []string{`"extra.weight"`, "unexpected"}},
		{"dtype", func(m map[string]safetensors.Tensor) {
			m["bias"] = safetensors.Tensor{Name: "bias", DType: safetensors.I64, Shape: []int64{2}, Data: make([]byte, 16)}
		}, nn.LoadOptions{}, []string{`"bias"`, "I64"}},
		{"bool dtype", func(m map[string]safetensors.Tensor) {
			m["weight"] = safetensors.Tensor{Name: "weight", DType: safetensors.Bool, Shape: []int64{2, 3}, Data: make([]byte, 6)}
		}, nn.LoadOptions{}, []string{`"weight"`, "BOOL"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := linFile(t, dir, c.name+".safetensors", c.edit)
			err := nn.LoadState(l, openSet(t, path), c.opts)
			require.Error(t, err)
			require.Contains(t, err.Error(), path, "the error names the file")
			for _, w := range c.wants {
				require.Contains(t, err.Error(), w)
			}
			// A failed load leaves the model as it was.
			require.Equal(t, orig, paramBytes(t, l))
			require.Equal(t, tensor.Float32, l.Weight.DType())
			require.Equal(t, tensor.Float32, l.Bias.DType())
		})
	}
}

func TestLoadStateLenientOptions(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	dir := t.TempDir()
	l := &nn.Linear{Weight: param(s, []float32{9, 9, 9, 9, 9, 9}, 2, 3), Bias: param(s, []float32{8, 8}, 2)}
	defer nn.FreeParams(l)

	// IgnoreUnexpected lets a named extra key pass, and only that one.
	path := linFile(t, dir, "extra.safetensors", func(m map[string]safetensors.Tensor) {
		m["rotary.inv_freq"] = safetensors.Tensor{Name: "rotary.inv_freq", DType: safetensors.F32, Shape: []int64{1}, Data: f32le(1)}
	})
	ignore := func(k string) bool { return k == "rotary.inv_freq" }
	require.NoError(t, nn.LoadState(l, openSet(t, path), nn.LoadOptions{IgnoreUnexpected: ignore}))
	require.Equal(t, f32le(1, 2, 3, 4, 5, 6), s.Bytes(l.Weight.T()))
	require.Equal(t, f32le(-1, -2), s.Bytes(l.Bias.T()))
	err := nn.LoadState(l, openSet(t, path), nn.LoadOptions{IgnoreUnexpected: func(string) bool { return false }})
	require.Error(t, err)
	require.Contains(t, err.Error(), `"rotary.inv_freq"`)

	// AllowMissing keeps the old value (and its requires_grad) of a
	// parameter the file lacks; the rest load.
	l.Bias.Set(s.Keep(s.FromFloat32([]float32{8, 8}, 2)))
	s.SetRequiresGrad(l.Bias.T(), true)
	path = linFile(t, dir, "nobias.safetensors", func(m map[string]safetensors.Tensor) {
		delete(m, "bias")
		m["weight"] = safetensors.Tensor{Name: "weight", DType: safetensors.F32, Shape: []int64{2, 3}, Data: f32le(6, 5, 4, 3, 2, 1)}
	})
	var asked []string
	allow := func(name string) bool { asked = append(asked, name); return name == "bias" }
	require.NoError(t, nn.LoadState(l, openSet(t, path), nn.LoadOptions{AllowMissing: allow}))
	require.Equal(t, []string{"bias"}, asked, "asked only about the missing parameter")
	require.Equal(t, f32le(6, 5, 4, 3, 2, 1), s.Bytes(l.Weight.T()))
	require.Equal(t, f32le(8, 8), s.Bytes(l.Bias.T()))
	require.True(t, l.Bias.RequiresGrad())
	require.False(t, l.Weight.RequiresGrad())
	require.NoError(t, s.Err())
}

func TestLoadStateShardedSet(t *testing.T) {
	s := tensor.NewScope()
	defer s.Close()
	dir := t.TempDir()
	a := writeFile(t, filepath.Join(dir, "a.safetensors"),
		safetensors.Tensor{Name: "weight", DType: safetensors.F32, Shape: []int64{2, 3}, Data: f32le(1, 2, 3, 4, 5, 6)})
	b := writeFile(t, filepath.Join(dir, "b.safetensors"),
		safetensors.Tensor{Name: "other", DType: safetensors.F32, Shape: []int64{1}, Data: f32le(1)})
	l := &nn.Linear{Weight: param(s, make([]float32, 6), 2, 3), Bias: param(s, []float32{0, 0}, 2)}
	defer nn.FreeParams(l)

	// Missing: no single file holds it, so the message names them all.
	err := nn.LoadState(l, openSet(t, a, b), nn.LoadOptions{})
	require.Error(t, err)
	require.Contains(t, err.Error(), a)
	require.Contains(t, err.Error(), b)
	require.Contains(t, err.Error(), `"bias"`)

	// Unexpected: the message names the shard holding the key.
	l.Bias = nil
	err = nn.LoadState(l, openSet(t, a, b), nn.LoadOptions{})
	require.Error(t, err)
	require.Contains(t, err.Error(), b)
	require.NotContains(t, err.Error(), a)
	require.Contains(t, err.Error(), `"other"`)
}

func TestLoadStateIntegerParam(t *testing.T) {
	type counter struct {
		Steps *nn.Param `nn:"steps"`
	}
	s := tensor.NewScope()
	defer s.Close()
	dir := t.TempDir()
	c := &counter{Steps: nn.NewParam(s.Keep(s.FromInt64([]int64{0, 0}, 2)))}
	defer nn.FreeParams(c)
	i64 := make([]byte, 16)
	binary.LittleEndian.PutUint64(i64, 41)
	binary.LittleEndian.PutUint64(i64[8:], 1<<40)

	// An integer parameter keeps its dtype and exact values (no float trip).
	path := writeFile(t, filepath.Join(dir, "ok.safetensors"),
		safetensors.Tensor{Name: "steps", DType: safetensors.I64, Shape: []int64{2}, Data: i64})
	require.NoError(t, nn.LoadState(c, openSet(t, path), nn.LoadOptions{}))
	require.Equal(t, tensor.Int64, c.Steps.DType())
	require.Equal(t, i64, s.Bytes(c.Steps.T()))

	// Float data or a narrower integer is refused, naming file and key.
	for _, bad := range []safetensors.Tensor{
		{Name: "steps", DType: safetensors.F32, Shape: []int64{2}, Data: f32le(1.5, 2)},
		{Name: "steps", DType: safetensors.I32, Shape: []int64{2}, Data: make([]byte, 8)},
	} {
		path := writeFile(t, filepath.Join(dir, string(bad.DType)+".safetensors"), bad)
		err := nn.LoadState(c, openSet(t, path), nn.LoadOptions{})
		require.Error(t, err, bad.DType)
		require.Contains(t, err.Error(), path)
		require.Contains(t, err.Error(), `"steps"`)
		require.Contains(t, err.Error(), string(bad.DType))
		require.Equal(t, tensor.Int64, c.Steps.DType())
		require.Equal(t, i64, s.Bytes(c.Steps.T()))
	}
}

func TestUnknownDTypeFile(t *testing.T) {
	// A dtype neither safetensors nor libtorch here knows (an fp8 format):
	// opening the file fails, naming the file and the key.
	hdr := []byte(`{"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}`)
	for len(hdr)%8 != 0 {
		hdr = append(hdr, ' ')
	}
	buf := make([]byte, 8, 8+len(hdr)+2)
	binary.LittleEndian.PutUint64(buf, uint64(len(hdr)))
	buf = append(append(buf, hdr...), 0x38, 0x40)
	path := filepath.Join(t.TempDir(), "fp8.safetensors")
	require.NoError(t, os.WriteFile(path, buf, 0o644))

	_, err := safetensors.OpenFiles(path)
	require.Error(t, err)
	require.Contains(t, err.Error(), path)
	require.Contains(t, err.Error(), `"w"`)
	require.Contains(t, err.Error(), "F8_E4M3")
}

func TestDTypeMapping(t *testing.T) {
	pairs := map[safetensors.DType]tensor.DType{
		"F32": tensor.Float32, "F16": tensor.Float16, "BF16": tensor.BFloat16, "F64": tensor.Float64,
		"I64": tensor.Int64, "I32": tensor.Int32, "I16": tensor.Int16, "I8": tensor.Int8,
		"U8": tensor.Uint8, "BOOL": tensor.Bool,
	}
	for st, td := range pairs {
		got, ok := nn.DTypeOf(st)
		require.True(t, ok, st)
		require.Equal(t, td, got, st)
		back, ok := nn.SafetensorsDType(td)
		require.True(t, ok, td)
		require.Equal(t, st, back, td)
		// Element sizes agree on both sides.
		require.Equal(t, st.Size(), td.Size(), st)
	}
	_, ok := nn.DTypeOf("F8_E4M3")
	require.False(t, ok)
	_, ok = nn.SafetensorsDType(tensor.DType(99))
	require.False(t, ok)
}
