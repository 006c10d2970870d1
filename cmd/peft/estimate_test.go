package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func writeConfig(t *testing.T, js string) string {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "config.json"), []byte(js), 0o644))
	return dir
}

// The table for a LLaMA-2-7B config.json: a job sized before downloading.
func TestEstimateTable(t *testing.T) {
	dir := writeConfig(t, `{"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
		"num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "tie_word_embeddings": false}`)
	var out, errb bytes.Buffer
	require.NoError(t, run([]string{"estimate", "--model", filepath.Join(dir, "config.json"), "--method", "full,lora,qlora",
		"--r", "8", "--batch", "4", "--seq", "512", "--dtype", "bf16", "--device", "cuda"}, &out, &errb), errb.String())
	s := out.String()
	require.Contains(t, s, "6,738,415,616 parameters, 32 layers, hidden 4096")
	require.Contains(t, s, "batch 4 x seq 512, bf16, adamw, activation checkpointing off, device cuda")
	lines := strings.Split(strings.TrimSpace(s), "\n")
	require.Len(t, lines, 3+1+3)
	require.Regexp(t, `^full\s+6,738,415,616\s+100.0000\s+0.49\s+12.55\s`, lines[4])
	require.Regexp(t, `^lora\s+4,194,304\s+0.0622\s`, lines[5])
	require.Regexp(t, `^qlora\s+4,194,304\s+0.0622\s+0.49\s+3.62\s`, lines[6])

	out.Reset()
	require.NoError(t, run([]string{"estimate", "--model", dir}, &out, &errb))
	require.Contains(t, out.String(), "adapter") // every method, bitfit left out (no biases)
	require.NotContains(t, out.String(), "bitfit")
	require.ErrorContains(t, run([]string{"estimate", "--model", dir, "--method", "dora"}, &out, &errb), `unknown method "dora"`)
	require.ErrorContains(t, run([]string{"estimate"}, &out, &errb), "--model is required")
	require.ErrorContains(t, run([]string{"estimate", "--model", dir, "--measure"}, &out, &errb), "one --method")
}

// The benchmark config (33.5 M parameters, 25.3 M outside the embeddings):
// the estimate is within 25% of the peak RSS that 3 fp32 training steps
// (batch 4 × 256) reach, for full fine-tuning and LoRA (q,v, r 8), each
// measured in a fresh process.
func TestEstimateWithinAQuarterOfMeasuredRSS(t *testing.T) {
	cfg := `{"model_type": "llama", "hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8,
		"num_attention_heads": 8, "num_key_value_heads": 8, "vocab_size": 8000, "max_position_embeddings": 512,
		"tie_word_embeddings": false}`
	if m := os.Getenv("GOPEFT_ESTIMATE_CHILD"); m != "" {
		var out bytes.Buffer
		require.NoError(t, run([]string{"estimate", "--model", writeConfig(t, cfg), "--method", m,
			"--batch", "4", "--seq", "256", "--measure"}, &out, os.Stderr))
		os.Stdout.Write(out.Bytes())
		return
	}
	re := regexp.MustCompile(`measured peak RSS over 3 training steps: (\d+) MiB \(estimate (\d+) MiB, ([-+][\d.]+)%\)`)
	for _, method := range []string{"full", "lora"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestEstimateWithinAQuarterOfMeasuredRSS$", "-test.count=1")
		cmd.Env = append(os.Environ(), "GOPEFT_ESTIMATE_CHILD="+method)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		m := re.FindStringSubmatch(string(out))
		require.NotNil(t, m, string(out))
		pct, _ := strconv.ParseFloat(m[3], 64)
		t.Logf("%s: measured %s MiB, estimate %s MiB (%+.1f%%)", method, m[1], m[2], pct)
		require.LessOrEqual(t, pct, 25.0)
		require.GreaterOrEqual(t, pct, -25.0)
	}
}
