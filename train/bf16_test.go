package train_test

import (
	"io"
	"strings"
	"testing"

	"github.com/gopeft/peft/adapter"
	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/ia3"
	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/nn/quant"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/prefix"
	"github.com/gopeft/peft/prompt"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
	"github.com/stretchr/testify/require"
)

func repeatWords(t *testing.T) *data.Dataset {
	var recs []data.Instruction
	for i := 0; i < 16; i++ {
		w := []string{"red", "green", "blue", "cyan"}[i%4]
		recs = append(recs, data.Instruction{Instruction: "Repeat the word.", Input: w, Output: w})
	}
	tmpl, err := data.TemplateByName("alpaca")
	require.NoError(t, err)
	ds, err := data.Instructions(bytes{}, recs, data.Options{Template: tmpl, MaxLength: 128})
	require.NoError(t, err)
	return ds
}

// Every method trains on a bfloat16 base the way current PEFT does it:
// the base stays bf16 and frozen (bit-identical), the adapter's weights,
// gradients and AdamW state are float32, the loss falls, with and without
// activation checkpointing, and the curve follows the same run on the
// float32 base closely.
func TestTrainOnBF16Base(t *testing.T) {
	ds := repeatWords(t)
	methods := map[string]func() peft.Config{
		"lora": func() peft.Config {
			return &lora.Config{R: 8, LoraAlpha: 16, TargetModules: lora.List("q_proj", "v_proj", "down_proj")}
		},
		"ia3": func() peft.Config { return &ia3.Config{} },
		"prompt": func() peft.Config {
			return &prompt.TuningConfig{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4}}
		},
		"prefix": func() peft.Config {
			return &prefix.Config{PromptLearningConfig: peft.PromptLearningConfig{NumVirtualTokens: 4}}
		},
		"bottleneck": func() peft.Config { return &adapter.Config{ReductionFactor: 4, OutputAdapter: true} },
	}
	fx := fixtureDir(t)
	for name, cfg := range methods {
		for _, ckpt := range []bool{false, true} {
			t.Run(name+map[bool]string{false: "", true: "+checkpointing"}[ckpt], func(t *testing.T) {
				run := func(dtype string) ([]float64, *peft.Model, func()) {
					base, err := llama.Load(fx, models.WithDType(dtype))
					require.NoError(t, err)
					peft.SetSeed(7)
					pm, err := peft.New(base, cfg())
					require.NoError(t, err)
					out := t.TempDir()
					tr := train.New(pm, train.Config{LR: 1e-2, BatchSize: 4, MaxSteps: 6, Seed: 1, NoShuffle: true,
						Checkpointing: ckpt, OutputDir: out, Progress: io.Discard})
					require.NoError(t, tr.Fit(ds, nil))
					if dtype == "bfloat16" {
						// the optimizer state in the checkpoint is float32
						opt, err := safetensors.OpenFiles(out + "/checkpoint-6/optimizer.safetensors")
						require.NoError(t, err)
						for _, k := range opt.Names() {
							info, _, _ := opt.Info(k)
							if len(info.Shape) > 0 {
								require.Equal(t, safetensors.F32, info.DType, k)
							}
						}
						opt.Close()
					}
					return tr.Losses(), pm, base.Free
				}
				before := snapshotBase(t, fx)
				losses, pm, free := run("bfloat16")
				defer free()
				t.Logf("bf16 losses %.4f", losses)
				require.Less(t, losses[len(losses)-1], losses[0], "loss falls: %v", losses)
				for _, np := range nn.NamedParams(pm) {
					switch {
					case np.Param.RequiresGrad():
						require.Equal(t, tensor.Float32, np.Param.DType(), "trainable %s", np.Name)
					case strings.Contains(np.Name, "base_layer") || !strings.Contains(np.Name, "lora_"):
						if np.Param.DType() != tensor.BFloat16 && !strings.Contains(np.Name, "prompt_encoder") &&
							!strings.Contains(np.Name, "ia3_l") && !strings.Contains(np.Name, "adapter_") {
							t.Fatalf("frozen %s is %s, want bfloat16", np.Name, np.Param.DType())
						}
					}
				}
				requireBaseUnchanged(t, pm, before)
				ref, pm32, free32 := run("float32")
				defer free32()
				_ = pm32
				for i := range ref {
					require.InDelta(t, ref[i], losses[i], 0.03*ref[i]+0.02, "step %d: bf16 %v vs float32 %v", i, losses, ref)
				}
			})
		}
	}
}

// snapshotBase reads the fixture's weights as bf16 values (what the bf16
// base holds), keyed by parameter name.
func snapshotBase(t *testing.T, dir string) map[string][]byte {
	m, err := llama.Load(dir, models.WithDType("bfloat16"))
	require.NoError(t, err)
	defer m.Free()
	s := tensor.NoGradScope()
	defer s.Close()
	out := map[string][]byte{}
	for _, np := range nn.NamedParams(m) {
		out[np.Name] = s.Bytes(np.Param.T())
	}
	require.NoError(t, s.Err())
	return out
}

// requireBaseUnchanged checks every base weight of pm against before
// (base_layer names map to the plain ones).
func requireBaseUnchanged(t *testing.T, pm *peft.Model, before map[string][]byte) {
	s := tensor.NoGradScope()
	defer s.Close()
	seen := 0
	for _, np := range nn.NamedParams(pm) {
		name := strings.TrimPrefix(np.Name, "base_model.model.")
		name = strings.Replace(name, ".base_layer.", ".", 1)
		if want, ok := before[name]; ok {
			require.Equal(t, want, s.Bytes(np.Param.T()), name)
			seen++
		}
	}
	require.Equal(t, len(before), seen, "every base weight found")
}

func fixtureDir(t *testing.T) string {
	dir := "../testdata/hf/llama-tiny"
	_, err := llama.LoadConfig(dir)
	require.NoError(t, err, "golden fixtures expected at testdata/hf")
	return dir
}

// QLoRA with bnb_4bit_compute_dtype bfloat16 on a bf16 base trains on the
// CPU: 4-bit weights dequantized to bf16, the layers kept in float in
// bf16, the LoRA weights float32; the loss falls.
func TestQLoRAComputeBF16(t *testing.T) {
	ds := repeatWords(t)
	base, err := llama.LoadQuantized(fixtureDir(t), quant.Config{ComputeDType: "bfloat16", UseDoubleQuant: true},
		models.WithDType("bfloat16"))
	require.NoError(t, err)
	defer base.Free()
	peft.SetSeed(7)
	pm, err := lora.Wrap(base, &lora.Config{R: 8, LoraAlpha: 16, TargetModules: lora.Regex("all-linear")})
	require.NoError(t, err)
	tr := train.New(pm, train.Config{LR: 2e-2, BatchSize: 4, MaxSteps: 6, Seed: 1, NoShuffle: true,
		Checkpointing: true, Progress: io.Discard})
	require.NoError(t, tr.Fit(ds, nil))
	losses := tr.Losses()
	t.Logf("losses %.4f", losses)
	require.Less(t, losses[len(losses)-1], losses[0]-0.05)
	for _, np := range nn.TrainableParams(pm) {
		require.Equal(t, tensor.Float32, np.Param.DType(), np.Name)
	}
	require.Equal(t, tensor.BFloat16, base.Model.Norm.(*nn.RMSNorm).Weight.DType())
}
