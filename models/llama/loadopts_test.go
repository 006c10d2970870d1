package llama_test

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// tinyCheckpoint writes llama-tiny's config and weights with one tensor's
// dtype changed by edit (the bytes are rewritten to match the new dtype).
func tinyCheckpoint(t *testing.T, key string, dt safetensors.DType) string {
	src := filepath.Join("..", "..", "testdata", "hf", "llama-tiny")
	dir := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(src, "config.json"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644))
	set, err := safetensors.OpenDir(src)
	require.NoError(t, err)
	defer set.Close()
	var out []safetensors.Tensor
	for _, name := range set.Names() {
		info, _, _ := set.Info(name)
		data, err := set.Data(name)
		require.NoError(t, err)
		if name == key {
			n := int(info.NumElements())
			data = make([]byte, n*dt.Size())
			info.DType = dt
		}
		out = append(out, safetensors.Tensor{Name: name, DType: info.DType, Shape: info.Shape, Data: append([]byte(nil), data...)})
	}
	require.NoError(t, safetensors.Write(filepath.Join(dir, "model.safetensors"), out, map[string]string{"format": "pt"}))
	return dir
}

// A checkpoint whose dtype cannot become the model's fails naming the
// file and the key, before any parameter changes; the option errors name
// the option.
func TestLoadDTypeErrors(t *testing.T) {
	dir := tinyCheckpoint(t, "model.layers.0.mlp.up_proj.weight", safetensors.I32)
	for _, dt := range []string{"auto", "float32", "bfloat16"} {
		_, err := llama.Load(dir, models.WithDType(dt))
		require.ErrorContains(t, err, "model.safetensors")
		require.ErrorContains(t, err, `"model.layers.0.mlp.up_proj.weight" has dtype I32, the model expects floating-point data`)
	}
	_, err := llama.Load(dir, models.WithDType("int8"))
	require.ErrorContains(t, err, `dtype "int8": want auto, float32, bfloat16 or float16`)
	_, err = llama.Load(dir, models.WithDevice("gpu"))
	require.ErrorContains(t, err, `device "gpu": want cpu, cuda or cuda:N`)

	// an fp8 tensor: the header itself is refused, naming file and key
	fp8 := t.TempDir()
	cfg, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, os.WriteFile(filepath.Join(fp8, "config.json"), cfg, 0o644))
	hdr, _ := json.Marshal(map[string]any{"lm_head.weight": map[string]any{"dtype": "F8_E4M3", "shape": []int{1}, "data_offsets": []int{0, 1}}})
	for len(hdr)%8 != 0 {
		hdr = append(hdr, ' ')
	}
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(hdr)))
	b = append(append(b, hdr...), 0)
	require.NoError(t, os.WriteFile(filepath.Join(fp8, "model.safetensors"), b, 0o644))
	_, err = llama.Load(fp8)
	require.ErrorContains(t, err, `tensor "lm_head.weight": unknown dtype "F8_E4M3"`)
}

// dtype auto follows config.json's torch_dtype, else the checkpoint's
// floating-point tensors; the loaded model's config records what it is.
func TestLoadDTypeAuto(t *testing.T) {
	src := filepath.Join("..", "..", "testdata", "hf", "llama-tiny")
	m, err := llama.Load(src) // torch_dtype float32
	require.NoError(t, err)
	require.Equal(t, tensor.Float32, m.DType())
	m.Free()

	// a bf16 save loads as bf16 by default and says so in its config
	bf, err := llama.Load(src, models.WithDType("bfloat16"))
	require.NoError(t, err)
	dir := t.TempDir()
	require.NoError(t, bf.Save(dir))
	bf.Free()
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	require.Contains(t, string(raw), `"torch_dtype": "bfloat16"`)
	back, err := llama.Load(dir)
	require.NoError(t, err)
	require.Equal(t, tensor.BFloat16, back.DType())
	for _, np := range nn.NamedParams(back) {
		require.Equal(t, tensor.BFloat16, np.Param.DType(), np.Name)
	}
	back.Free()

	// without torch_dtype, auto takes the stored tensors' dtype
	var cfg map[string]any
	require.NoError(t, json.Unmarshal(raw, &cfg))
	delete(cfg, "torch_dtype")
	js, _ := json.Marshal(cfg)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), js, 0o644))
	back, err = llama.Load(dir)
	require.NoError(t, err)
	require.Equal(t, tensor.BFloat16, back.DType())
	back.Free()
}
