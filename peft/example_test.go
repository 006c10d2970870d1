package peft_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gopeft/peft/lora" // also registers LORA with peft.Load
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/llama"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// Load an adapter that Python PEFT saved, switch it off and on, and merge it.
func ExampleLoad() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := peft.Load(base, "../testdata/hf/adapters/llama-tiny/lora-default") // "default", frozen
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg, _ := model.Config(model.ActiveAdapter())
	fmt.Println(model.ActiveAdapter(), cfg.PeftType(), cfg.TaskType())
	restore := model.DisableAdapters() // base model only
	restore()
	merged, err := model.MergeAndUnload()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(peft.TrainableSummary(merged))
	// Output:
	// default LORA CAUSAL_LM
	// trainable params: 0 || all params: 139,584 || trainable%: 0.0000
}

// Seed libtorch's generator before wrapping, as torch.manual_seed before
// get_peft_model: the random parts of an adapter (here LoRA's A) come out
// the same in every run.
func ExampleSetSeed() {
	loraA := func() [][]float64 {
		base, _ := llama.Load("../testdata/hf/llama-tiny")
		peft.SetSeed(42)
		m, err := lora.Wrap(base, &lora.Config{R: 4, LoraAlpha: 8, TargetModules: lora.List("q_proj")})
		if err != nil {
			fmt.Println(err)
			return nil
		}
		var as [][]float64
		for _, np := range nn.NamedParams(m) {
			if strings.HasSuffix(np.Name, "lora_A.default.weight") {
				as = append(as, np.Param.Tensor().Float64Values(true))
			}
		}
		return as
	}
	first, second := loraA(), loraA()
	same := len(first) > 0 && len(first) == len(second)
	for i := range first {
		same = same && slices.Equal(first[i], second[i])
	}
	fmt.Println(len(first), "lora_A matrices, identical:", same)
	// Output: 2 lora_A matrices, identical: true
}

// PEFT's check_target_module_exists on module paths: list entries match
// the end of a path, layers_to_transform keeps layer 1, exclude_modules
// wins.
func ExampleTargeting_Match() {
	tg := peft.Targeting{
		TargetModules:     peft.TargetList("q_proj", "v_proj"),
		ExcludeModules:    peft.TargetList("layers.1.self_attn.v_proj"),
		LayersToTransform: []int{1},
	}
	for _, p := range []string{
		"model.layers.0.self_attn.q_proj",
		"model.layers.1.self_attn.q_proj",
		"model.layers.1.self_attn.v_proj",
		"model.layers.1.self_attn.k_proj",
	} {
		fmt.Println(p, tg.Match(p))
	}
	// Output:
	// model.layers.0.self_attn.q_proj false
	// model.layers.1.self_attn.q_proj true
	// model.layers.1.self_attn.v_proj false
	// model.layers.1.self_attn.k_proj false
}

// The injection walk on its own: a method's config (here LoRA's) is
// injected into a model tree, and the wrapped layers are listed.
func ExampleInjectAdapter() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	err = peft.InjectAdapter(base, "default", &lora.Config{TargetModules: lora.Regex(`.*\.0\.self_attn\.(q|v)_proj`)})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, at := range peft.Tuners(base) {
		fmt.Println(at.Path, at.Tuner.Adapters())
	}
	err = peft.InjectAdapter(base, "x", &lora.Config{TargetModules: lora.List("qkv")})
	fmt.Println(err != nil && strings.Contains(err.Error(), `Target modules ["qkv"] not found in the base model`))
	// Output:
	// model.layers.0.self_attn.q_proj [default]
	// model.layers.0.self_attn.v_proj [default]
	// true
}

// PEFT's from_pretrained(adapter_name=..., is_trainable=True), load_adapter
// and set_adapter with a list; save_pretrained(selected_adapters=[...])
// writes a non-default adapter into a subfolder named after it.
func ExampleModel_SetAdapter() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	dir := "../testdata/hf/adapters/llama-tiny/"
	m, err := peft.Load(base, dir+"lora-default", peft.WithAdapterName("a"), peft.Trainable())
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := m.LoadAdapter(dir+"lora-rich", "b"); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.ActiveAdapters())
	if err := m.SetAdapter("a", "b"); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.ActiveAdapters())
	out, err := os.MkdirTemp("", "adapters")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(out)
	if err := m.SaveSelected(out, "b"); err != nil {
		fmt.Println(err)
		return
	}
	_, err = os.Stat(filepath.Join(out, "b", peft.ConfigName))
	fmt.Println("b saved in its subfolder:", err == nil)
	// Output:
	// [a]
	// [a b]
	// b saved in its subfolder: true
}

// One forward with an adapter choice of its own (the model's active
// adapter stays as it is): a mixed batch, one adapter per row.
func ExampleModel_ForwardWith() {
	base, err := llama.Load("../testdata/hf/llama-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	m, err := peft.Load(base, "../testdata/hf/adapters/llama-tiny/lora-default")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nn.FreeParams(m)
	if err := m.LoadAdapter("../testdata/hf/adapters/llama-tiny/lora-rich", "rich"); err != nil {
		fmt.Println(err)
		return
	}
	s := tensor.NoGradScope()
	defer s.Close()
	ids := s.FromInt64([]int64{328, 384, 353, 180, 256, 432}, 2, 3)
	out, err := m.ForwardWith(s, models.Inputs{InputIDs: ids}, &peft.Selection{Rows: []string{"rich", peft.BaseAdapterName}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(out.Logits.Shape(), m.ActiveAdapters())
	_, err = m.ForwardWith(s, models.Inputs{InputIDs: ids}, &peft.Selection{Adapters: []string{"nope"}})
	fmt.Println(err)
	// Output:
	// [2 3 512] [default]
	// peft: forward: peft: no adapter "nope" (have [default rich])
}
