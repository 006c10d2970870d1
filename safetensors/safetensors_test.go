package safetensors

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// moduleRoot walks up from the test's working directory to the folder
// holding go.mod.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	require.NoError(t, err)
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		require.NotEqual(t, dir, parent, "go.mod not found above the test directory")
		dir = parent
	}
}

func sharedDir(t *testing.T) string {
	return filepath.Join(moduleRoot(t), "testdata")
}

// rawFile writes an 8-byte little-endian length, header and data verbatim.
func rawFile(t *testing.T, path, header string, data []byte) {
	t.Helper()
	n := uint64(len(header))
	var b []byte
	for i := 0; i < 8; i++ {
		b = append(b, byte(n>>(8*i)))
	}
	b = append(b, header...)
	b = append(b, data...)
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rt.safetensors")
	f16 := []byte{0x00, 0x3c, 0x00, 0xc1, 0xff, 0x7b} // 1, -2.5, 65504
	tensors := []Tensor{
		{Name: "z.weight", DType: F32, Shape: []int64{2, 3}, Data: Float32Bytes([]float32{1, 2, 3, -4, 5.5, float32(math.Inf(1))})},
		{Name: "a.ids", DType: I64, Shape: []int64{4}, Data: Int64Bytes([]int64{0, -1, math.MaxInt64, math.MinInt64})},
		{Name: "m.half", DType: F16, Shape: []int64{3}, Data: f16},
		{Name: "m.bf", DType: BF16, Shape: []int64{1, 1, 2}, Data: []byte{0x80, 0x3f, 0x00, 0xbf}},
		{Name: "scalar", DType: F64, Shape: []int64{}, Data: []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f}},
		{Name: "mask", DType: Bool, Shape: []int64{3}, Data: []byte{1, 0, 1}},
		{Name: "bytes", DType: U8, Shape: []int64{2}, Data: []byte{7, 255}},
		{Name: "small", DType: I8, Shape: []int64{1}, Data: []byte{0x80}},
		{Name: "i16", DType: I16, Shape: []int64{1}, Data: []byte{0x34, 0x12}},
		{Name: "i32", DType: I32, Shape: []int64{1}, Data: []byte{1, 2, 3, 4}},
		{Name: "empty", DType: F32, Shape: []int64{0, 5}, Data: nil},
	}
	meta := map[string]string{"format": "pt", "note": "round \"trip\" ✓"}
	require.NoError(t, Write(path, tensors, meta))

	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	hlen := int64(raw[0]) | int64(raw[1])<<8 | int64(raw[2])<<16 | int64(raw[3])<<24
	require.Equal(t, []byte{0, 0, 0, 0}, raw[4:8])
	require.Zero(t, hlen%8, "header length %d not padded to 8", hlen)
	require.True(t, json.Valid(raw[8:8+hlen]))
	require.Equal(t, byte('}'), bytes.TrimRight(raw[8:8+hlen], " ")[len(bytes.TrimRight(raw[8:8+hlen], " "))-1])

	f, err := Open(path)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, path, f.Path())
	require.Equal(t, meta, f.Metadata())

	// File order is name order; data offsets follow it contiguously.
	names := f.Names()
	want := make([]string, 0, len(tensors))
	for _, tt := range tensors {
		want = append(want, tt.Name)
	}
	require.ElementsMatch(t, want, names)
	var off int64
	var nonEmpty []string
	for _, n := range names {
		info, ok := f.Info(n)
		require.True(t, ok)
		if info.Begin != info.End {
			nonEmpty = append(nonEmpty, n)
		}
		require.Equal(t, off, info.Begin, n)
		off = info.End
	}
	require.IsIncreasing(t, nonEmpty)
	require.Equal(t, int64(len(raw))-8-hlen, off, "data buffer holds exactly the tensors")

	for _, tt := range tensors {
		info, ok := f.Info(tt.Name)
		require.True(t, ok, tt.Name)
		require.Equal(t, tt.Name, info.Name)
		require.Equal(t, tt.DType, info.DType, tt.Name)
		require.Equal(t, tt.Shape, info.Shape, tt.Name)
		require.Equal(t, int64(len(tt.Data)), info.NumElements()*int64(info.DType.Size()), tt.Name)
		got, err := f.Data(tt.Name)
		require.NoError(t, err)
		require.Equal(t, len(tt.Data), len(got), tt.Name)
		if len(tt.Data) > 0 {
			require.Equal(t, tt.Data, got, tt.Name)
		}
	}
	info, _ := f.Info("scalar")
	require.Equal(t, int64(1), info.NumElements())
	got, _ := f.Data("z.weight")
	require.Equal(t, []float32{1, 2, 3, -4, 5.5, float32(math.Inf(1))}, Float32s(got))
	got, _ = f.Data("a.ids")
	require.Equal(t, []int64{0, -1, math.MaxInt64, math.MinInt64}, Int64s(got))

	// Info returns a copy: mutating it must not change the file's view.
	info, _ = f.Info("z.weight")
	info.Shape[0] = 99
	info, _ = f.Info("z.weight")
	require.Equal(t, []int64{2, 3}, info.Shape)

	require.NoError(t, f.Close())
	require.NoError(t, f.Close(), "Close is idempotent")
	_, err = f.Data("z.weight")
	require.ErrorContains(t, err, "closed")
}

func TestWriteExactBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "one.safetensors")
	require.NoError(t, Write(path, []Tensor{{Name: "w", DType: F32, Shape: []int64{1}, Data: []byte{0, 0, 0x80, 0x3f}}},
		map[string]string{"format": "pt"}))
	got, err := os.ReadFile(path)
	require.NoError(t, err)
	want := []byte{88, 0, 0, 0, 0, 0, 0, 0}
	want = append(want, `{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}   `...)
	want = append(want, 0, 0, 0x80, 0x3f)
	require.Equal(t, string(want), string(got))

	// No tensors and no metadata: "{}" padded to 8 bytes.
	require.NoError(t, Write(path, nil, nil))
	got, err = os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "\x08\x00\x00\x00\x00\x00\x00\x00{}      ", string(got))
	f, err := Open(path)
	require.NoError(t, err)
	require.Empty(t, f.Names())
	require.Nil(t, f.Metadata())
	require.NoError(t, f.Close())
}

func TestHandMadeLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hand.safetensors")
	// Unpadded header, keys out of file order, metadata not first.
	header := `{"b":{"dtype":"I64","shape":[],"data_offsets":[8,16]},` +
		`"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},` +
		`"__metadata__":{"k":"v"},` +
		`"h":{"dtype":"F16","shape":[1,2],"data_offsets":[16,20]},` +
		`"e":{"dtype":"U8","shape":[0],"data_offsets":[20,20]},` +
		`"g":{"dtype":"BF16","shape":[1],"data_offsets":[20,22]}}`
	data := []byte{
		0x00, 0x00, 0xc0, 0x3f, 0x00, 0x00, 0x00, 0xc0, // a = [1.5, -2]
		0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // b = -3
		0x00, 0x3c, 0x00, 0xc1, // h = [1, -2.5] (half)
		0x49, 0x40, // g = 3.140625 (bfloat16)
	}
	rawFile(t, path, header, data)

	f, err := Open(path)
	require.NoError(t, err)
	defer f.Close()
	require.Equal(t, []string{"a", "b", "h", "e", "g"}, f.Names())
	require.Equal(t, map[string]string{"k": "v"}, f.Metadata())

	a, ok := f.Info("a")
	require.True(t, ok)
	require.Equal(t, TensorInfo{Name: "a", DType: F32, Shape: []int64{2}, Begin: 0, End: 8}, a)
	b, _ := f.Data("a")
	require.Equal(t, []float32{1.5, -2}, Float32s(b))

	bi, _ := f.Info("b")
	require.Equal(t, []int64{}, bi.Shape)
	require.Equal(t, int64(1), bi.NumElements())
	b, _ = f.Data("b")
	require.Equal(t, []int64{-3}, Int64s(b))

	b, _ = f.Data("h")
	h := make([]float32, 2)
	F16ToF32(h, b)
	require.Equal(t, []float32{1, -2.5}, h)

	e, _ := f.Info("e")
	require.Equal(t, int64(0), e.NumElements())
	b, err = f.Data("e")
	require.NoError(t, err)
	require.Empty(t, b)

	b, _ = f.Data("g")
	g := make([]float32, 1)
	BF16ToF32(g, b)
	require.Equal(t, float32(3.140625), g[0])

	_, ok = f.Info("missing")
	require.False(t, ok)
}

func TestHFFixtures(t *testing.T) {
	shared := sharedDir(t)
	model := filepath.Join(shared, "hf", "llama-tiny", "model.safetensors")
	require.FileExists(t, model)
	f, err := Open(model)
	require.NoError(t, err)
	defer f.Close()
	emb, ok := f.Info("model.embed_tokens.weight")
	require.True(t, ok)
	require.Equal(t, F32, emb.DType)
	require.Equal(t, []int64{512, 64}, emb.Shape)
	head, ok := f.Info("lm_head.weight")
	require.True(t, ok)
	require.Equal(t, F32, head.DType)
	b, err := f.Data("model.embed_tokens.weight")
	require.NoError(t, err)
	require.Len(t, b, 512*64*4)
	vals := Float32s(b)
	var nonzero int
	for _, v := range vals {
		require.False(t, math.IsNaN(float64(v)) || math.IsInf(float64(v), 0))
		require.Less(t, math.Abs(float64(v)), 100.0)
		if v != 0 {
			nonzero++
		}
	}
	require.Greater(t, nonzero, len(vals)/2)
	require.Greater(t, len(f.Names()), 2)

	// The folder opens as a Set through model.safetensors.
	set, err := OpenDir(filepath.Dir(model))
	require.NoError(t, err)
	require.Equal(t, len(f.Names()), len(set.Names()))
	require.IsIncreasing(t, set.Names())
	require.NoError(t, set.Close())

	exp := filepath.Join(shared, "hf", "expected", "llama-tiny__base.safetensors")
	require.FileExists(t, exp)
	g, err := Open(exp)
	require.NoError(t, err)
	defer g.Close()
	ids, ok := g.Info("input_ids")
	require.True(t, ok)
	require.Equal(t, I64, ids.DType)
	require.Equal(t, []int64{2, 12}, ids.Shape)
	b, err = g.Data("input_ids")
	require.NoError(t, err)
	for _, id := range Int64s(b) {
		require.GreaterOrEqual(t, id, int64(0))
		require.Less(t, id, int64(512))
	}
	logits, ok := g.Info("logits")
	require.True(t, ok)
	require.Equal(t, F32, logits.DType)
	require.Equal(t, []int64{2, 12, 512}, logits.Shape)
	require.NotEmpty(t, g.Metadata())
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	const ok = `"ok":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}`
	cases := []struct {
		name   string
		header string
		data   []byte
		raw    []byte // used instead of header+data when set
		want   []string
	}{
		{name: "empty", raw: []byte{}, want: []string{"shorter than the 8-byte"}},
		{name: "short", raw: []byte{1, 2, 3}, want: []string{"3 bytes", "shorter than the 8-byte"}},
		{name: "header too long", raw: []byte{0xff, 0, 0, 0, 0, 0, 0, 0, '{', '}'}, want: []string{"truncated", "255"}},
		{name: "huge header length", raw: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'}, want: []string{"truncated"}},
		{name: "bad json", header: `{"x":{"dtype":"F32",`, want: []string{"header is not valid JSON"}},
		{name: "not object", header: `[1,2]   `, want: []string{"header is not valid JSON"}},
		{name: "trailing garbage", header: `{} {}`, want: []string{"header is not valid JSON"}},
		{name: "unknown dtype", header: `{"x":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}`, data: []byte{0},
			want: []string{`model.safetensors: tensor "x": unknown dtype "F8_E4M3"`}},
		{name: "missing dtype", header: `{"x":{"shape":[1],"data_offsets":[0,1]}}`, data: []byte{0},
			want: []string{`tensor "x"`, `missing field "dtype"`}},
		{name: "missing shape", header: `{"x":{"dtype":"U8","data_offsets":[0,1]}}`, data: []byte{0},
			want: []string{`tensor "x"`, `missing field "shape"`}},
		{name: "missing offsets", header: `{"x":{"dtype":"U8","shape":[1]}}`, data: []byte{0},
			want: []string{`tensor "x"`, `missing field "data_offsets"`}},
		{name: "offsets mismatch shape", header: `{"x":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}`, data: make([]byte, 24),
			want: []string{`tensor "x"`, `"data_offsets" [0, 20] spans 20 bytes`, "needs 24"}},
		{name: "offsets wrong arity", header: `{"x":{"dtype":"U8","shape":[1],"data_offsets":[0]}}`, data: []byte{0},
			want: []string{`tensor "x"`, `"data_offsets" must have 2 elements`}},
		{name: "offsets reversed", header: `{"x":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}`, data: make([]byte, 4),
			want: []string{`tensor "x"`, "not a valid range"}},
		{name: "negative dim", header: `{"x":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}`, data: []byte{0},
			want: []string{`tensor "x"`, "negative dimension"}},
		{name: "shape overflow", header: `{"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, data: make([]byte, 4),
			want: []string{`tensor "x"`, "too large"}},
		{name: "out of range", header: `{` + ok + `,"y":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, data: make([]byte, 10),
			want: []string{`tensor "y"`, "truncated", "10-byte data buffer"}},
		{name: "overlap", header: `{` + ok + `,"y":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}`, data: make([]byte, 5),
			want: []string{`"ok" [0, 4)`, `"y" [3, 5)`, "overlap"}},
		{name: "contained overlap", header: `{"big":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"a":{"dtype":"U8","shape":[1],"data_offsets":[2,3]},"b":{"dtype":"U8","shape":[1],"data_offsets":[5,6]}}`,
			data: make([]byte, 8), want: []string{`"big"`, "overlap"}},
		{name: "duplicate key", header: `{` + ok + `,` + ok + `}`, data: make([]byte, 4),
			want: []string{`tensor "ok" appears twice`}},
		{name: "metadata not strings", header: `{"__metadata__":{"a":1}}`,
			want: []string{`"__metadata__"`, "strings"}},
		{name: "bad entry type", header: `{"x":{"dtype":"U8","shape":"1","data_offsets":[0,1]}}`, data: []byte{0},
			want: []string{`tensor "x"`, "invalid header entry"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.raw != nil {
				require.NoError(t, os.WriteFile(path, c.raw, 0o644))
			} else {
				rawFile(t, path, c.header, c.data)
			}
			f, err := Open(path)
			require.Error(t, err)
			require.Nil(t, f)
			require.Contains(t, err.Error(), path, "error must name the file")
			for _, w := range c.want {
				require.Contains(t, err.Error(), w)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		_, err := Open(filepath.Join(dir, "nope.safetensors"))
		require.ErrorIs(t, err, os.ErrNotExist)
		require.ErrorContains(t, err, "nope.safetensors")
	})
	t.Run("directory", func(t *testing.T) {
		_, err := Open(dir)
		require.ErrorContains(t, err, "is a directory")
	})
	t.Run("missing key", func(t *testing.T) {
		rawFile(t, path, `{`+ok+`}`, make([]byte, 4))
		f, err := Open(path)
		require.NoError(t, err)
		defer f.Close()
		_, err = f.Data("absent.weight")
		require.ErrorIs(t, err, ErrNotFound)
		require.ErrorContains(t, err, path)
		require.ErrorContains(t, err, `"absent.weight"`)
	})
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "w.safetensors")
	good := Tensor{Name: "g", DType: F32, Shape: []int64{1}, Data: make([]byte, 4)}
	cases := []struct {
		name    string
		tensors []Tensor
		want    []string
	}{
		{"length mismatch", []Tensor{good, {Name: "x", DType: F32, Shape: []int64{2, 2}, Data: make([]byte, 12)}},
			[]string{`tensor "x"`, "12 bytes", "needs 16"}},
		{"duplicate", []Tensor{good, good}, []string{`tensor "g" is given twice`}},
		{"empty name", []Tensor{good, {DType: U8, Shape: []int64{1}, Data: []byte{1}}}, []string{"empty name"}},
		{"reserved name", []Tensor{{Name: "__metadata__", DType: U8, Shape: []int64{1}, Data: []byte{1}}}, []string{"reserved"}},
		{"unknown dtype", []Tensor{{Name: "x", DType: "F8_E5M2", Shape: []int64{1}, Data: []byte{1}}}, []string{`tensor "x"`, `unknown dtype "F8_E5M2"`}},
		{"negative dim", []Tensor{{Name: "x", DType: U8, Shape: []int64{-2}}}, []string{`tensor "x"`, "negative dimension"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := Write(path, c.tensors, nil)
			require.Error(t, err)
			require.Contains(t, err.Error(), path)
			for _, w := range c.want {
				require.Contains(t, err.Error(), w)
			}
			require.NoFileExists(t, path)
		})
	}
	err := Write(filepath.Join(dir, "no", "such", "dir", "x.safetensors"), []Tensor{good}, nil)
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestAtomicWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	require.NoError(t, Write(path, []Tensor{{Name: "w", DType: F32, Shape: []int64{2}, Data: Float32Bytes([]float32{1, 2})}}, nil))
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	err = Write(path, []Tensor{
		{Name: "a", DType: F32, Shape: []int64{3}, Data: Float32Bytes([]float32{1, 2, 3})},
		{Name: "bad", DType: F32, Shape: []int64{3}, Data: Float32Bytes([]float32{1, 2})},
	}, nil)
	require.ErrorContains(t, err, `tensor "bad"`)

	after, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, before, after, "failed Write must leave the old file untouched")
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file may remain")
	require.Equal(t, "model.safetensors", entries[0].Name())
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), st.Mode().Perm())

	// A successful overwrite replaces the content and also leaves no temp file.
	require.NoError(t, Write(path, []Tensor{{Name: "v", DType: I64, Shape: []int64{1}, Data: Int64Bytes([]int64{7})}}, nil))
	entries, err = os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	f, err := Open(path)
	require.NoError(t, err)
	require.Equal(t, []string{"v"}, f.Names())
	require.NoError(t, f.Close())

	// A failure after the temporary file exists (rename onto a non-empty
	// directory) must remove the temporary file too.
	blocker := filepath.Join(dir, "blocker")
	require.NoError(t, os.MkdirAll(filepath.Join(blocker, "child"), 0o755))
	err = Write(blocker, []Tensor{{Name: "v", DType: U8, Shape: []int64{1}, Data: []byte{1}}}, nil)
	require.ErrorContains(t, err, "rename")
	require.ErrorContains(t, err, blocker)
	entries, err = os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 2, "only model.safetensors and blocker/ may remain")
	require.NoError(t, os.RemoveAll(blocker))

	// An open mapping keeps seeing the old bytes after a rename-over.
	f, err = Open(path)
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, Write(path, []Tensor{{Name: "v", DType: I64, Shape: []int64{1}, Data: Int64Bytes([]int64{8})}}, nil))
	b, err := f.Data("v")
	require.NoError(t, err)
	require.Equal(t, []int64{7}, Int64s(b))
}

func writeIndex(t *testing.T, path string, weightMap map[string]string) {
	t.Helper()
	b, err := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 40}, "weight_map": weightMap})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b, 0o644))
}

func TestSharded(t *testing.T) {
	dir := t.TempDir()
	s1 := "model-00001-of-00002.safetensors"
	s2 := "model-00002-of-00002.safetensors"
	require.NoError(t, Write(filepath.Join(dir, s1), []Tensor{
		{Name: "layers.0.w", DType: F32, Shape: []int64{2}, Data: Float32Bytes([]float32{1, 2})},
		{Name: "embed", DType: F32, Shape: []int64{1, 2}, Data: Float32Bytes([]float32{3, 4})},
	}, map[string]string{"format": "pt"}))
	require.NoError(t, Write(filepath.Join(dir, s2), []Tensor{
		{Name: "layers.1.w", DType: F32, Shape: []int64{2}, Data: Float32Bytes([]float32{5, 6})},
		{Name: "head", DType: I64, Shape: []int64{1}, Data: Int64Bytes([]int64{9})},
	}, nil))
	indexPath := filepath.Join(dir, IndexFileName)
	wm := map[string]string{"layers.0.w": s1, "embed": s1, "layers.1.w": s2, "head": s2}
	writeIndex(t, indexPath, wm)

	idx, err := ReadIndex(indexPath)
	require.NoError(t, err)
	require.Equal(t, wm, idx.WeightMap)
	require.Equal(t, float64(40), idx.Metadata["total_size"])
	require.Equal(t, []string{s1, s2}, idx.Shards())

	set, err := OpenDir(dir)
	require.NoError(t, err)
	require.Equal(t, []string{"embed", "head", "layers.0.w", "layers.1.w"}, set.Names())
	require.Len(t, set.Files(), 2)
	info, f, ok := set.Info("layers.1.w")
	require.True(t, ok)
	require.Equal(t, filepath.Join(dir, s2), f.Path())
	require.Equal(t, []int64{2}, info.Shape)
	b, err := set.Data("layers.1.w")
	require.NoError(t, err)
	require.Equal(t, []float32{5, 6}, Float32s(b))
	b, err = set.Data("head")
	require.NoError(t, err)
	require.Equal(t, []int64{9}, Int64s(b))
	_, _, ok = set.Info("nope")
	require.False(t, ok)
	_, err = set.Data("nope")
	require.ErrorIs(t, err, ErrNotFound)
	require.ErrorContains(t, err, `"nope"`)
	require.NoError(t, set.Close())
	require.NoError(t, set.Close())

	// model.safetensors takes precedence over the index.
	require.NoError(t, Write(filepath.Join(dir, SingleFileName), []Tensor{
		{Name: "only", DType: U8, Shape: []int64{1}, Data: []byte{1}},
	}, nil))
	set, err = OpenDir(dir)
	require.NoError(t, err)
	require.Equal(t, []string{"only"}, set.Names())
	require.NoError(t, set.Close())
	require.NoError(t, os.Remove(filepath.Join(dir, SingleFileName)))

	t.Run("missing shard", func(t *testing.T) {
		d := t.TempDir()
		require.NoError(t, Write(filepath.Join(d, s1), []Tensor{{Name: "a", DType: U8, Shape: []int64{1}, Data: []byte{1}}}, nil))
		ip := filepath.Join(d, IndexFileName)
		writeIndex(t, ip, map[string]string{"a": s1, "b": s2})
		_, err := OpenDir(d)
		require.ErrorIs(t, err, os.ErrNotExist)
		require.ErrorContains(t, err, ip)
		require.ErrorContains(t, err, s2)
	})
	t.Run("name not in shard", func(t *testing.T) {
		d := t.TempDir()
		require.NoError(t, Write(filepath.Join(d, s1), []Tensor{{Name: "a", DType: U8, Shape: []int64{1}, Data: []byte{1}}}, nil))
		require.NoError(t, Write(filepath.Join(d, s2), []Tensor{{Name: "b", DType: U8, Shape: []int64{1}, Data: []byte{1}}}, nil))
		ip := filepath.Join(d, IndexFileName)
		writeIndex(t, ip, map[string]string{"a": s1, "b": s1})
		_, err := OpenDir(d)
		require.ErrorContains(t, err, ip)
		require.ErrorContains(t, err, `tensor "b"`)
		require.ErrorContains(t, err, s1)
	})
	t.Run("duplicate across files", func(t *testing.T) {
		d := t.TempDir()
		p1, p2 := filepath.Join(d, s1), filepath.Join(d, s2)
		require.NoError(t, Write(p1, []Tensor{{Name: "a", DType: U8, Shape: []int64{1}, Data: []byte{1}}}, nil))
		require.NoError(t, Write(p2, []Tensor{
			{Name: "b", DType: U8, Shape: []int64{1}, Data: []byte{2}},
			{Name: "a", DType: U8, Shape: []int64{1}, Data: []byte{3}},
		}, nil))
		_, err := OpenFiles(p1, p2)
		require.ErrorContains(t, err, `tensor "a"`)
		require.ErrorContains(t, err, p1)
		require.ErrorContains(t, err, p2)
		// Through an index as well.
		writeIndex(t, filepath.Join(d, IndexFileName), map[string]string{"a": s1, "b": s2})
		_, err = OpenDir(d)
		require.ErrorContains(t, err, p1)
		require.ErrorContains(t, err, p2)
	})
	t.Run("bad shard in a set", func(t *testing.T) {
		d := t.TempDir()
		p1, p2 := filepath.Join(d, s1), filepath.Join(d, s2)
		require.NoError(t, Write(p1, []Tensor{{Name: "a", DType: U8, Shape: []int64{1}, Data: []byte{1}}}, nil))
		require.NoError(t, os.WriteFile(p2, []byte("junk"), 0o644))
		_, err := OpenFiles(p1, p2)
		require.ErrorContains(t, err, p2)
	})
	t.Run("empty folder", func(t *testing.T) {
		d := t.TempDir()
		_, err := OpenDir(d)
		require.ErrorContains(t, err, d)
		require.ErrorContains(t, err, IndexFileName)
	})
	t.Run("bad index", func(t *testing.T) {
		d := t.TempDir()
		ip := filepath.Join(d, IndexFileName)
		require.NoError(t, os.WriteFile(ip, []byte(`{"weight_map": `), 0o644))
		_, err := OpenDir(d)
		require.ErrorContains(t, err, ip)
		require.ErrorContains(t, err, "not valid JSON")
		require.NoError(t, os.WriteFile(ip, []byte(`{"metadata": {}}`), 0o644))
		_, err = ReadIndex(ip)
		require.ErrorContains(t, err, `"weight_map"`)
		writeIndex(t, ip, map[string]string{"a": "../escape.safetensors"})
		_, err = ReadIndex(ip)
		require.ErrorContains(t, err, `"a"`)
		require.ErrorContains(t, err, "../escape.safetensors")
	})
}

func TestF16ToF32(t *testing.T) {
	cases := []struct {
		bits uint16
		want float32
	}{
		{0x3c00, 1.0},
		{0xc100, -2.5},
		{0x7bff, 65504},
		{0x0001, 1.0 / 16777216},    // smallest subnormal 2^-24
		{0x03ff, 1023.0 / 16777216}, // largest subnormal
		{0x0400, 1.0 / 16384},       // smallest normal 2^-14
		{0x3555, 0.333251953125},    // 1365/4096
		{0x8001, -1.0 / 16777216},   // negative subnormal
		{0xfbff, -65504},
		{0x0000, 0},
		{0x7c00, float32(math.Inf(1))},
		{0xfc00, float32(math.Inf(-1))},
	}
	src := make([]byte, 0, 2*len(cases))
	for _, c := range cases {
		src = append(src, byte(c.bits), byte(c.bits>>8))
	}
	dst := make([]float32, len(cases))
	F16ToF32(dst, src)
	for i, c := range cases {
		require.Equal(t, c.want, dst[i], "half 0x%04x", c.bits)
	}
	require.InDelta(t, 0.33325195, dst[6], 1e-8)

	// Negative zero keeps its sign; NaNs stay NaN.
	out := make([]float32, 3)
	F16ToF32(out, []byte{0x00, 0x80, 0x00, 0x7e, 0x01, 0xfc})
	require.Equal(t, uint32(0x80000000), math.Float32bits(out[0]))
	require.True(t, math.IsNaN(float64(out[1])))
	require.True(t, math.IsNaN(float64(out[2])))

	// Every half value against an independent float64 formula.
	all := make([]byte, 2*65536)
	for i := 0; i < 65536; i++ {
		all[2*i], all[2*i+1] = byte(i), byte(i>>8)
	}
	got := make([]float32, 65536)
	F16ToF32(got, all)
	for i := 0; i < 65536; i++ {
		sign := 1.0
		if i&0x8000 != 0 {
			sign = -1
		}
		exp, frac := (i>>10)&0x1f, float64(i&0x3ff)
		var want float64
		switch {
		case exp == 0x1f && frac == 0:
			want = math.Inf(int(sign))
		case exp == 0x1f:
			require.True(t, math.IsNaN(float64(got[i])), "0x%04x", i)
			continue
		case exp == 0:
			want = sign * math.Ldexp(frac, -24)
		default:
			want = sign * math.Ldexp(1+frac/1024, exp-15)
		}
		require.Equal(t, want, float64(got[i]), "0x%04x", i)
	}

	require.Panics(t, func() { F16ToF32(make([]float32, 1), []byte{1, 2, 3}) })
	require.Panics(t, func() { F16ToF32(make([]float32, 1), []byte{1, 2, 3, 4}) })
}

func TestBF16ToF32(t *testing.T) {
	dst := make([]float32, 5)
	BF16ToF32(dst, []byte{0x80, 0x3f, 0x00, 0xbf, 0x49, 0x40, 0x80, 0x7f, 0xc0, 0x7f})
	require.Equal(t, float32(1.0), dst[0])
	require.Equal(t, float32(-0.5), dst[1])
	require.Equal(t, float32(3.140625), dst[2])
	require.True(t, math.IsInf(float64(dst[3]), 1))
	require.True(t, math.IsNaN(float64(dst[4])))
	require.Panics(t, func() { BF16ToF32(make([]float32, 0), []byte{0x80, 0x3f}) })
}

func TestByteHelpers(t *testing.T) {
	f := []float32{0, 1, -1.5, float32(math.SmallestNonzeroFloat32), math.MaxFloat32}
	b := Float32Bytes(f)
	require.Equal(t, []byte{0, 0, 0xc0, 0xbf}, b[8:12]) // -1.5 little-endian
	require.Equal(t, f, Float32s(b))
	i := []int64{1, -2, 1 << 40}
	b = Int64Bytes(i)
	require.Equal(t, []byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, b[8:16])
	require.Equal(t, i, Int64s(b))
	require.Empty(t, Float32s(nil))
	require.Panics(t, func() { Float32s([]byte{1, 2, 3}) })
	require.Panics(t, func() { Int64s([]byte{1, 2, 3, 4}) })

	// Float32s copies: changing the source afterwards does not change it.
	src := Float32Bytes([]float32{2})
	v := Float32s(src)
	src[3] = 0
	require.Equal(t, float32(2), v[0])
}

func TestDTypeSize(t *testing.T) {
	want := map[DType]int{F64: 8, I64: 8, F32: 4, I32: 4, F16: 2, BF16: 2, I16: 2, I8: 1, U8: 1, Bool: 1, "F8_E4M3": 0, "": 0, "f32": 0}
	for d, n := range want {
		require.Equal(t, n, d.Size(), string(d))
	}
	require.True(t, strings.EqualFold(string(Bool), "bool"))
}

// Issue #19 item 8: Write's file gets mode 0644, not its temp file's 0600.
func TestWriteMode(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.safetensors")
	require.NoError(t, Write(p, []Tensor{{Name: "a", DType: "F32", Shape: []int64{1}, Data: make([]byte, 4)}}, nil))
	st, err := os.Stat(p)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), st.Mode().Perm())
}
