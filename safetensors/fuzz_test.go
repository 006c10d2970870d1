package safetensors

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/internal/fuzzseed"
)

// FuzzOpen: any bytes as a .safetensors file (header and data) open
// without a panic; a file that opens re-saves (Write) to a file that opens
// with the same names, dtypes, shapes, data and metadata.
func FuzzOpen(f *testing.F) {
	for _, b := range fuzzseed.Files("hf/*/model.safetensors", "hf/adapters/*/*/adapter_model.safetensors") {
		f.Add(b)
	}
	var buf bytes.Buffer
	dir := f.TempDir()
	p := filepath.Join(dir, "seed.safetensors")
	if err := Write(p, []Tensor{{Name: "a", DType: F32, Shape: []int64{2}, Data: make([]byte, 8)},
		{Name: "b", DType: "I64", Shape: []int64{}, Data: make([]byte, 8)}}, map[string]string{"format": "pt"}); err == nil {
		b, _ := os.ReadFile(p)
		buf.Write(b)
	}
	f.Add(buf.Bytes())
	f.Add([]byte("\x08\x00\x00\x00\x00\x00\x00\x00{}      "))
	f.Add([]byte("\x02\x00\x00\x00\x00\x00\x00\x00{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "x.safetensors")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		file, err := Open(p)
		if err != nil {
			return
		}
		defer file.Close()
		var ts []Tensor
		for _, n := range file.Names() {
			info, ok := file.Info(n)
			if !ok {
				t.Fatalf("%q listed but has no info", n)
			}
			d, err := file.Data(n)
			if err != nil {
				t.Fatalf("%q: %v", n, err)
			}
			ts = append(ts, Tensor{Name: n, DType: info.DType, Shape: info.Shape, Data: d})
		}
		q := filepath.Join(dir, "y.safetensors")
		if err := Write(q, ts, file.Metadata()); err != nil {
			t.Fatalf("re-save of a file that opened: %v", err)
		}
		again, err := Open(q)
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer again.Close()
		if len(again.Names()) != len(ts) {
			t.Fatalf("%d tensors, re-saved %d", len(ts), len(again.Names()))
		}
		for _, tt := range ts {
			info, ok := again.Info(tt.Name)
			d, _ := again.Data(tt.Name)
			if !ok || info.DType != tt.DType || !sameShape(info.Shape, tt.Shape) || !bytes.Equal(d, tt.Data) {
				t.Fatalf("%q differs after re-save", tt.Name)
			}
		}
		m1, m2 := file.Metadata(), again.Metadata()
		if len(m1) != len(m2) {
			t.Fatalf("metadata %v, re-saved %v", m1, m2)
		}
		for k, v := range m1 {
			if m2[k] != v {
				t.Fatalf("metadata %q: %q, re-saved %q", k, v, m2[k])
			}
		}
	})
}

func sameShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FuzzReadIndex: any bytes as model.safetensors.index.json read without a
// panic; the shards listed are names inside the folder.
func FuzzReadIndex(f *testing.F) {
	f.Add([]byte(`{"metadata": {"total_size": 16}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}`))
	f.Add([]byte(`{"weight_map": {"a": "../x.safetensors"}}`))
	f.Add([]byte(`{"weight_map": null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		p := filepath.Join(dir, "model.safetensors.index.json")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		idx, err := ReadIndex(p)
		if err != nil {
			return
		}
		_ = idx.Shards()
		_, _ = OpenDir(dir)
	})
}
