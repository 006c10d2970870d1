package llama_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gopeft/peft/internal/memstat"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// mmapConfig is big enough that a copy shows in RSS (26M parameters:
// 104 MiB in float32, 52 MiB in bf16) and small enough to write quickly.
func mmapConfig() *llama.Config {
	return &llama.Config{ModelType: "llama", HiddenSize: 512, IntermediateSize: 1376, NumHiddenLayers: 6,
		NumAttentionHeads: 8, NumKeyValueHeads: 4, VocabSize: 8000, MaxPositionEmbeddings: 512,
		RMSNormEps: 1e-6, RopeTheta: 10000, HiddenAct: "silu", InitializerRange: 0.02}
}

// saveAs writes a random model of mmapConfig in dtype dt.
func saveAs(t *testing.T, dir string, dt tensor.DType) int64 {
	m, err := llama.New(mmapConfig(), 3)
	require.NoError(t, err)
	defer m.Free()
	s := tensor.NoGradScope()
	for _, np := range nn.NamedParams(m) {
		if np.Name != "lm_head.weight" || !m.Config.TieWordEmbeddings {
			np.Param.Set(s.Keep(s.To(np.Param.T(), dt)))
		}
	}
	require.NoError(t, s.Err())
	s.Close()
	require.NoError(t, m.Save(dir))
	_, total := nn.CountParams(m)
	return total * int64(dt.Size())
}

func hashDir(t *testing.T, dir string) map[string][32]byte {
	out := map[string][32]byte{}
	files, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		fd, err := os.Open(f)
		require.NoError(t, err)
		h := sha256.New()
		_, err = io.Copy(h, fd)
		fd.Close()
		require.NoError(t, err)
		var sum [32]byte
		copy(sum[:], h.Sum(nil))
		out[filepath.Base(f)] = sum
	}
	return out
}

// mmapChild loads dir and prints the growth of resident anonymous memory
// after the load and after a forward pass, then merges and unmerges a
// LoRA adapter into the mapped weights and prints the growth again.
func mmapChild(t *testing.T, dir, dtype string) {
	// one-time costs first: libtorch's start-up and its first ops
	s := tensor.NoGradScope()
	s.Float32s(s.Matmul(s.Ones(tensor.Float32, 64, 64), s.Ones(tensor.Float32, 64, 64)))
	s.Close()
	settle()
	before := memstat.RSSAnon()
	m, err := llama.Load(dir, models.WithDType(dtype))
	require.NoError(t, err)
	settle()
	afterLoad := memstat.RSSAnon()
	fileAfterLoad := memstat.RSSFile()

	forward := func() []float32 {
		s := tensor.NoGradScope()
		defer s.Close()
		ids := make([]int64, 64)
		for i := range ids {
			ids[i] = int64(i*37) % 8000
		}
		out := m.ForwardT(s, &models.Batch{InputIDs: s.FromInt64(ids, 1, 64)})
		require.NoError(t, s.Err())
		return s.Float32s(out.Logits)
	}
	base := forward()
	settle()
	afterForward := memstat.RSSAnon()

	// merge a LoRA adapter (non-zero B) into the mapped weights, unmerge
	pm, err := lora.Wrap(m, &lora.Config{R: 4, LoraAlpha: 8, TargetModules: lora.List("q_proj"),
		InitLoraWeights: lora.Init{Value: "false"}})
	require.NoError(t, err)
	require.NoError(t, pm.Merge(false))
	merged := forward()
	require.NotEqual(t, base, merged, "the merge changed the weights the forward reads")
	require.NoError(t, pm.Unmerge())
	settle()
	afterMerge := memstat.RSSAnon()
	fmt.Printf("MMAP %d %d %d %d\n", afterLoad-before, afterForward-before, afterMerge-before, fileAfterLoad)
}

// A frozen base stored in the wanted dtype is not copied: its weights are
// views of the copy-on-write mapped checkpoint, so resident anonymous
// memory barely grows when it loads and runs (file-backed pages are the
// kernel's page cache, shared and evictable); merging an adapter gives
// only the merged weights private copies and the file stays byte for byte
// what it was. Measured in child processes, for a float32 and a bfloat16
// checkpoint; WithoutMmap shows what a copy costs.
func TestMappedBaseIsNotCopied(t *testing.T) {
	if dtype := os.Getenv("GOPEFT_MMAP_CHILD"); dtype != "" {
		mmapChild(t, os.Getenv("GOPEFT_MMAP_DIR"), dtype)
		return
	}
	for _, tc := range []struct {
		dt    tensor.DType
		dtype string
	}{{tensor.Float32, "float32"}, {tensor.BFloat16, "bfloat16"}} {
		t.Run(tc.dtype, func(t *testing.T) {
			dir := t.TempDir()
			size := saveAs(t, dir, tc.dt)
			hashes := hashDir(t, dir)
			cmd := exec.Command(os.Args[0], "-test.run=^TestMappedBaseIsNotCopied$", "-test.count=1")
			cmd.Env = append(os.Environ(), "GOPEFT_MMAP_CHILD="+tc.dtype, "GOPEFT_MMAP_DIR="+dir,
				"MALLOC_MMAP_THRESHOLD_=65536", "MALLOC_TRIM_THRESHOLD_=65536")
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, string(out))
			var load, fwd, merge, file int64
			found := false
			for _, line := range strings.Split(string(out), "\n") {
				if v, ok := strings.CutPrefix(line, "MMAP "); ok {
					_, err := fmt.Sscanf(v, "%d %d %d %d", &load, &fwd, &merge, &file)
					require.NoError(t, err)
					found = true
				}
			}
			require.True(t, found, string(out))
			t.Logf("%s model %.1f MiB: anonymous growth after load %.1f MiB, after a forward %.1f MiB, after merge+unmerge of q_proj %.1f MiB; file-backed resident after load %.1f MiB",
				tc.dtype, mib(size), mib(load), mib(fwd), mib(merge), mib(file))
			require.Less(t, load, size/20, "load copied the weights")
			require.Less(t, fwd, size/8, "the forward copied the weights")
			// q_proj of 6 layers is 512×512 each: the merge's private copies
			qBytes := int64(6 * 512 * 512 * tc.dt.Size())
			require.Less(t, merge, fwd+2*qBytes+(4<<20), "merge copied more than the merged weights")
			require.Equal(t, hashes, hashDir(t, dir), "the checkpoint files changed")
		})
	}
}

// WithoutMmap copies: the same measurement grows by the model's size.
func TestWithoutMmapCopies(t *testing.T) {
	if os.Getenv("GOPEFT_NOMMAP_CHILD") != "" {
		s := tensor.NoGradScope()
		s.Float32s(s.Matmul(s.Ones(tensor.Float32, 64, 64), s.Ones(tensor.Float32, 64, 64)))
		s.Close()
		settle()
		before := memstat.RSSAnon()
		m, err := llama.Load(os.Getenv("GOPEFT_MMAP_DIR"), models.WithoutMmap())
		require.NoError(t, err)
		settle()
		fmt.Printf("NOMMAP %d\n", memstat.RSSAnon()-before)
		m.Free()
		return
	}
	dir := t.TempDir()
	size := saveAs(t, dir, tensor.BFloat16)
	cmd := exec.Command(os.Args[0], "-test.run=^TestWithoutMmapCopies$", "-test.count=1")
	cmd.Env = append(os.Environ(), "GOPEFT_NOMMAP_CHILD=1", "GOPEFT_MMAP_DIR="+dir,
		"MALLOC_MMAP_THRESHOLD_=65536", "MALLOC_TRIM_THRESHOLD_=65536")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, string(out))
	i := bytes.Index(out, []byte("NOMMAP "))
	require.GreaterOrEqual(t, i, 0, string(out))
	var grow int64
	_, err = fmt.Sscanf(string(out[i+len("NOMMAP "):]), "%d", &grow)
	require.NoError(t, err)
	require.InDelta(t, float64(size), float64(grow), float64(size)/10, "a copied load holds the model's bytes")
}
