package main

import (
	"bytes"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// requireChartFiles asserts out lists BASE.svg and BASE.png, an SVG
// document naming each of names and a PNG that decodes.
func requireChartFiles(t *testing.T, out, base string, names ...string) {
	t.Helper()
	require.Equal(t, base+".svg\n"+base+".png\n", out)
	svg, err := os.ReadFile(base + ".svg")
	require.NoError(t, err)
	require.Contains(t, string(svg), "<svg")
	for _, n := range names {
		require.Contains(t, string(svg), ">"+n+"</text>")
	}
	f, err := os.Open(base + ".png")
	require.NoError(t, err)
	defer f.Close()
	_, err = png.Decode(f)
	require.NoError(t, err)
}

func TestPlotCommand(t *testing.T) {
	run1 := filepath.Join(t.TempDir(), "run1")
	require.NoError(t, os.MkdirAll(run1, 0o755))
	var lines []string
	for i := 1; i <= 12; i++ {
		line := fmt.Sprintf(`{"step":%d,"epoch":%g,"loss":%g,"lr":%g}`, i, float64(i)/4, 2.0/float64(i), 1e-3)
		if i%4 == 0 {
			line = fmt.Sprintf(`{"step":%d,"epoch":%g,"eval_loss":%g}`, i, float64(i)/4, 3.0/float64(i))
		}
		lines = append(lines, line)
	}
	require.NoError(t, os.WriteFile(filepath.Join(run1, "metrics.jsonl"), []byte(strings.Join(lines, "\n")), 0o644))
	var out, errb bytes.Buffer
	require.NoError(t, run([]string{"plot", run1}, &out, &errb), errb.String())
	requireChartFiles(t, out.String(), filepath.Join(run1, "curves"), "run1", "train loss", "eval loss", "learning rate")

	out.Reset()
	base := filepath.Join(t.TempDir(), "c")
	require.NoError(t, run([]string{"plot", "--out", base, "--title", "mine", filepath.Join(run1, "metrics.jsonl")}, &out, &errb))
	requireChartFiles(t, out.String(), base, "mine")

	require.ErrorContains(t, run([]string{"plot"}, &out, &errb), "one run folder")
	require.ErrorContains(t, run([]string{"plot", t.TempDir()}, &out, &errb), "metrics.jsonl")
}

func TestEstimateChart(t *testing.T) {
	dir := writeConfig(t, `{"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
		"num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": true}`)
	base := filepath.Join(t.TempDir(), "memory")
	var out, errb bytes.Buffer
	require.NoError(t, run([]string{"estimate", "--model", dir, "--method", "full,lora,qlora", "--chart", base}, &out, &errb), errb.String())
	s := out.String()
	i := strings.Index(s, base+".svg")
	require.Positive(t, i, s)
	requireChartFiles(t, s[i:], base, "full", "lora", "qlora", "weights", "optimizer")
}
