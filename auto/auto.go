// Package auto loads an adapter of any method this library implements
// without naming the method, as HF's AutoPeftModel does: it imports every
// method package (lora, ia3, adapter, bitfit, freeze, prompt, prefix, and
// every method added since: see Methods), so
// method package (lora, adalora, ia3, adapter, bitfit, freeze, prompt, prefix), so
// each registers its peft_type with package peft, and offers Load and
// ReadConfig on top of peft's.
//
//	base, _ := llama.Load("path/to/model")
//	model, err := auto.Load(base, "path/to/adapter")   // LoRA, IA3, prefix tuning, …
//
// Importing auto (even as `_`) is also what makes peft.Load and
// Model.LoadAdapter find every method. The package holds no state of its
// own; its functions are as safe for concurrent use as peft's.
package auto

import (
	_ "github.com/gopeft/peft/adalora"   // ADALORA
	_ "github.com/gopeft/peft/adapter"   // BOTTLENECK
	_ "github.com/gopeft/peft/bitfit"    // BITFIT
	_ "github.com/gopeft/peft/boft"      // BOFT
	_ "github.com/gopeft/peft/fourierft" // FOURIERFT
	_ "github.com/gopeft/peft/freeze"    // FREEZE
	_ "github.com/gopeft/peft/hra"       // HRA
	_ "github.com/gopeft/peft/ia3"       // IA3
	_ "github.com/gopeft/peft/lntuning"  // LN_TUNING
	_ "github.com/gopeft/peft/loha"      // LOHA
	_ "github.com/gopeft/peft/lokr"      // LOKR
	_ "github.com/gopeft/peft/lora"      // LORA
	"github.com/gopeft/peft/models"
	_ "github.com/gopeft/peft/oft" // OFT
	"github.com/gopeft/peft/peft"
	_ "github.com/gopeft/peft/prefix" // PREFIX_TUNING
	_ "github.com/gopeft/peft/prompt" // PROMPT_TUNING, P_TUNING
	_ "github.com/gopeft/peft/vera"   // VERA

	_ "github.com/gopeft/peft/adaptionprompt" // ADAPTION_PROMPT
)

// Load wraps base with the adapter saved in dir, whatever its method (the
// peft_type of its adapter_config.json): PEFT's
// PeftModel.from_pretrained(base, dir, adapter_name=..., is_trainable=...)
// with peft.WithAdapterName and peft.Trainable as options.
func Load(base models.Model, dir string, opts ...peft.LoadOption) (*peft.Model, error) {
	return peft.Load(base, dir, opts...)
}

// ReadConfig reads dir/adapter_config.json with its method's decoder
// (PEFT's PeftConfig.from_pretrained).
func ReadConfig(dir string) (peft.Config, error) { return peft.ReadConfig(dir) }

// Methods lists the peft_types that Load reads (every method of this
// library, plus any a program registered itself).
func Methods() []peft.PeftType { return peft.Registered() }
