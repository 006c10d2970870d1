package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"
)

// Options control Write.
type Options struct {
	DType     string // "bf16" (default) or "f32"
	Seed      uint64
	ShardSize int64 // largest shard in bytes; 0 means 2e9
	Workers   int   // generator goroutines; 0 means runtime.NumCPU()
}

// Result describes a written folder.
type Result struct {
	Tensors int
	Params  int64
	Bytes   int64    // total_size: the tensors' bytes
	Files   []string // the weight files, in order
}

type initKind int

const (
	normal initKind = iota // N(0, initializer_range)
	ones                   // RMSNorm weights
	zeros                  // Gemma's RMSNorm weights (the norm scales by 1 + weight)
)

// spec is one tensor of the checkpoint.
type spec struct {
	name  string
	shape []int64
	init  initKind
}

func (s spec) numel() int64 {
	n := int64(1)
	for _, d := range s.shape {
		n *= d
	}
	return n
}

func intField(cfg map[string]any, key string) (int64, bool) {
	switch v := cfg[key].(type) {
	case int:
		return int64(v), true
	case int64:
		return v, true
	case float64:
		return int64(v), v == math.Trunc(v)
	}
	return 0, false
}

func floatField(cfg map[string]any, key string, def float64) float64 {
	switch v := cfg[key].(type) {
	case int:
		return float64(v)
	case float64:
		return v
	}
	return def
}

// Specs lists the checkpoint's tensors in HF state-dict order (the order
// transformers cuts shards in): embeddings, each layer's attention, MLP and
// norms, the final norm, and lm_head unless the embeddings are tied.
func Specs(cfg map[string]any) ([]spec, error) {
	get := func(key string) (int64, error) {
		v, ok := intField(cfg, key)
		if !ok || v <= 0 {
			return 0, fmt.Errorf("config: field %q missing or not a positive integer", key)
		}
		return v, nil
	}
	var h, inter, layers, heads, vocab int64
	for _, f := range []struct {
		key string
		p   *int64
	}{{"hidden_size", &h}, {"intermediate_size", &inter}, {"num_hidden_layers", &layers},
		{"num_attention_heads", &heads}, {"vocab_size", &vocab}} {
		v, err := get(f.key)
		if err != nil {
			return nil, err
		}
		*f.p = v
	}
	kvHeads, ok := intField(cfg, "num_key_value_heads")
	if !ok || kvHeads <= 0 {
		kvHeads = heads
	}
	hd, ok := intField(cfg, "head_dim")
	if !ok || hd <= 0 {
		if h%heads != 0 {
			return nil, fmt.Errorf("config: hidden_size %d is not a multiple of num_attention_heads %d", h, heads)
		}
		hd = h / heads
	}
	qkvBias, _ := cfg["attention_bias"].(bool)
	oBias := qkvBias
	if cfg["model_type"] == "qwen2" {
		qkvBias, oBias = true, false
	}
	tied, _ := cfg["tie_word_embeddings"].(bool)
	mt, _ := cfg["model_type"].(string)
	gemma := mt == "gemma2" || mt == "gemma3_text"
	norm := ones
	if gemma {
		norm = zeros
		if _, ok := cfg["tie_word_embeddings"]; !ok {
			tied = true // Gemma's default
		}
	}

	q, kv := heads*hd, kvHeads*hd
	out := []spec{{"model.embed_tokens.weight", []int64{vocab, h}, normal}}
	for i := int64(0); i < layers; i++ {
		p := "model.layers." + strconv.FormatInt(i, 10) + "."
		lin := func(name string, o, in int64, bias bool) {
			out = append(out, spec{p + name + ".weight", []int64{o, in}, normal})
			if bias {
				out = append(out, spec{p + name + ".bias", []int64{o}, normal})
			}
		}
		if cfg["model_type"] == "phi3" { // Phi-3: fused projections, in Phi3's module order
			lin("self_attn.o_proj", h, q, oBias)
			lin("self_attn.qkv_proj", q+2*kv, h, qkvBias)
			lin("mlp.gate_up_proj", 2*inter, h, false)
			lin("mlp.down_proj", h, inter, false)
		} else {
			lin("self_attn.q_proj", q, h, qkvBias)
			lin("self_attn.k_proj", kv, h, qkvBias)
			lin("self_attn.v_proj", kv, h, qkvBias)
			lin("self_attn.o_proj", h, q, oBias)
			if mt == "qwen3" || mt == "gemma3_text" { // per-head query/key RMSNorms
				out = append(out, spec{p + "self_attn.q_norm.weight", []int64{hd}, norm},
					spec{p + "self_attn.k_norm.weight", []int64{hd}, norm})
			}
			lin("mlp.gate_proj", inter, h, false)
			lin("mlp.up_proj", inter, h, false)
			lin("mlp.down_proj", h, inter, false)
		}
		out = append(out, spec{p + "input_layernorm.weight", []int64{h}, norm},
			spec{p + "post_attention_layernorm.weight", []int64{h}, norm})
		if gemma {
			out = append(out, spec{p + "pre_feedforward_layernorm.weight", []int64{h}, norm},
				spec{p + "post_feedforward_layernorm.weight", []int64{h}, norm})
		}
	}
	out = append(out, spec{"model.norm.weight", []int64{h}, norm})
	if !tied {
		out = append(out, spec{"lm_head.weight", []int64{vocab, h}, normal})
	}
	return out, nil
}

// shardPlan cuts specs into shards the way transformers' shard_checkpoint
// does: a tensor starts a new shard when it would push the current one
// over maxSize and the current one is not empty.
func shardPlan(specs []spec, elem int, maxSize int64) [][]spec {
	var shards [][]spec
	var size int64
	for _, s := range specs {
		b := s.numel() * int64(elem)
		if len(shards) == 0 || (size+b > maxSize && len(shards[len(shards)-1]) > 0) {
			shards = append(shards, nil)
			size = 0
		}
		shards[len(shards)-1] = append(shards[len(shards)-1], s)
		size += b
	}
	return shards
}

// header renders a safetensors header for tensors (already in file order),
// padded with spaces to a multiple of 8 bytes, as the Python library does.
func header(tensors []spec, dtype string, elem int) []byte {
	var hdr bytes.Buffer
	hdr.WriteString(`{"__metadata__":{"format":"pt"}`)
	var off int64
	for _, t := range tensors {
		n := t.numel() * int64(elem)
		name, _ := json.Marshal(t.name)
		hdr.WriteByte(',')
		hdr.Write(name)
		hdr.WriteString(`:{"dtype":"` + dtype + `","shape":[`)
		for k, d := range t.shape {
			if k > 0 {
				hdr.WriteByte(',')
			}
			hdr.WriteString(strconv.FormatInt(d, 10))
		}
		hdr.WriteString(`],"data_offsets":[` + strconv.FormatInt(off, 10) + "," + strconv.FormatInt(off+n, 10) + "]}")
		off += n
	}
	hdr.WriteByte('}')
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	return hdr.Bytes()
}

// chunkLen is the number of values generated from one random stream.
const chunkLen = 1 << 20

// job is one chunk of one tensor.
type job struct {
	t     *spec
	chunk int64
	n     int64
	out   chan []byte
}

// fill generates a chunk's bytes.
func (g *generator) fill(j job) []byte {
	buf := make([]byte, j.n*int64(g.elem))
	switch j.t.init {
	case ones:
		for i := int64(0); i < j.n; i++ {
			g.put(buf, i, 1)
		}
	case zeros: // make's bytes are zeros already
	default:
		h := fnv.New64a()
		h.Write([]byte(j.t.name))
		r := rand.New(rand.NewPCG(h.Sum64()^splitmix(g.seed), uint64(j.chunk)))
		for i := int64(0); i < j.n; i++ {
			g.put(buf, i, float32(r.NormFloat64()*g.std))
		}
	}
	return buf
}

func (g *generator) put(buf []byte, i int64, v float32) {
	if g.elem == 2 {
		binary.LittleEndian.PutUint16(buf[2*i:], BF16(v))
	} else {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
	}
}

type generator struct {
	seed uint64
	std  float64
	elem int
}

// BF16 rounds v to bfloat16 (round to nearest, ties to even; NaN stays NaN).
func BF16(v float32) uint16 {
	b := math.Float32bits(v)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

func splitmix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Write writes the checkpoint folder dir for cfg (see the package comment).
// Existing model.safetensors, model-*-of-*.safetensors and index files in
// dir are removed first, so that a loader never sees a mix of two runs;
// config.json is written last.
func Write(dir string, cfg map[string]any, o Options) (Result, error) {
	var res Result
	dtype, elem, torchDType := "BF16", 2, "bfloat16"
	switch o.DType {
	case "", "bf16", "bfloat16":
	case "f32", "float32":
		dtype, elem, torchDType = "F32", 4, "float32"
	default:
		return res, fmt.Errorf("-dtype %q: want bf16 or f32", o.DType)
	}
	if o.ShardSize <= 0 {
		o.ShardSize = 2_000_000_000
	}
	if o.Workers <= 0 {
		o.Workers = runtime.NumCPU()
	}
	specs, err := Specs(cfg)
	if err != nil {
		return res, err
	}
	cfg["torch_dtype"] = torchDType
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	old, _ := filepath.Glob(filepath.Join(dir, "model*.safetensors*"))
	for _, p := range old {
		if err := os.Remove(p); err != nil {
			return res, err
		}
	}
	os.Remove(filepath.Join(dir, "config.json"))

	shards := shardPlan(specs, elem, o.ShardSize)
	names := make([]string, len(shards))
	for i := range shards {
		names[i] = "model.safetensors"
		if len(shards) > 1 {
			names[i] = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		}
		// inside a file: sorted by name, as the Python library writes them
		sort.Slice(shards[i], func(a, b int) bool { return shards[i][a].name < shards[i][b].name })
	}

	g := &generator{seed: o.Seed, std: floatField(cfg, "initializer_range", 0.02), elem: elem}
	jobs := make(chan job)
	ordered := make(chan job, 4*o.Workers) // bounds the chunks in flight
	var wg sync.WaitGroup
	for w := 0; w < o.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				j.out <- g.fill(j)
			}
		}()
	}
	stop := make(chan struct{})
	go func() { // enumerate the chunks in file order
		defer close(ordered)
		defer close(jobs)
		for _, sh := range shards {
			for i := range sh {
				t := &sh[i]
				for c, n := int64(0), t.numel(); c*chunkLen < n; c++ {
					j := job{t: t, chunk: c, n: min(chunkLen, n-c*chunkLen), out: make(chan []byte, 1)}
					select {
					case ordered <- j:
					case <-stop:
						return
					}
					jobs <- j
				}
			}
		}
	}()
	defer func() {
		close(stop)
		for range ordered { // let the enumerator and the workers finish
		}
		wg.Wait()
	}()

	weightMap := map[string]string{}
	for i, sh := range shards {
		path := filepath.Join(dir, names[i])
		if err := writeShard(path, sh, dtype, elem, ordered); err != nil {
			return res, err
		}
		res.Files = append(res.Files, names[i])
		for _, t := range sh {
			weightMap[t.name] = names[i]
			res.Tensors++
			res.Params += t.numel()
			res.Bytes += t.numel() * int64(elem)
		}
	}
	if len(shards) > 1 {
		idx := map[string]any{"metadata": map[string]any{"total_size": res.Bytes}, "weight_map": weightMap}
		if err := writeJSON(filepath.Join(dir, "model.safetensors.index.json"), idx); err != nil {
			return res, err
		}
	}
	return res, writeJSON(filepath.Join(dir, "config.json"), cfg)
}

func writeShard(path string, tensors []spec, dtype string, elem int, ordered <-chan job) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // a no-op after the rename
	defer f.Close()
	w := bufio.NewWriterSize(f, 4<<20)
	hdr := header(tensors, dtype, elem)
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(hdr)))
	w.Write(n[:])
	w.Write(hdr)
	for _, t := range tensors {
		for c, total := int64(0), t.numel(); c*chunkLen < total; c++ {
			j, ok := <-ordered
			if !ok || j.t.name != t.name || j.chunk != c {
				return fmt.Errorf("%s: internal error: chunk order", path)
			}
			if _, err := w.Write(<-j.out); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	// on disk before the benchmark runs: no write-back during a measurement
	if err := f.Sync(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// writeJSON writes v as transformers does (indent 2, sorted keys, a final
// newline).
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
