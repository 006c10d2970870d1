// Package peft is the method-independent core of the library: the names
// HF PEFT uses for methods and tasks, the Config interface every method's
// configuration satisfies, and trainable-parameter accounting in PEFT's
// exact format.
//
// Methods live in their own packages (lora, ia3, prompt, prefix, adapter,
// bitfit, freeze) and register themselves here; peft never imports them
// (package auto imports them all). Layer methods share one injection
// mechanism: a config implementing TunerConfig says what it targets and
// how it wraps one layer, and InjectAdapter does the walk over the module
// tree and PEFT's target matching (see TunerConfig; ARCHITECTURE.md has
// the whole contract).
//
// EstimateMemory sizes a training job from a config.json alone (weights,
// activations, gradients, optimizer states, framework), for full
// fine-tuning and each method; `peft estimate` prints it as a table.
package peft

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/gopeft/peft/nn"
)

// PeftType is the `peft_type` value of adapter_config.json.
type PeftType string

// The peft_type values of HF PEFT's methods that this library implements.
const (
	LoRA         PeftType = "LORA"
	IA3          PeftType = "IA3"
	PromptTuning PeftType = "PROMPT_TUNING"
	PTuning      PeftType = "P_TUNING"
	PrefixTuning PeftType = "PREFIX_TUNING"
)

// TaskType is the `task_type` value of adapter_config.json.
type TaskType string

// HF PEFT's task types.
const (
	CausalLM          TaskType = "CAUSAL_LM"
	SeqCls            TaskType = "SEQ_CLS"
	TokenCls          TaskType = "TOKEN_CLS"
	Seq2SeqLM         TaskType = "SEQ_2_SEQ_LM"
	QuestionAns       TaskType = "QUESTION_ANS"
	FeatureExtraction TaskType = "FEATURE_EXTRACTION"
)

// FormatTrainable renders counts as PEFT's print_trainable_parameters does:
// "trainable params: 1,234 || all params: 5,678 || trainable%: 21.7330".
func FormatTrainable(trainable, total int64) string {
	pct := 0.0
	if total > 0 {
		pct = 100 * float64(trainable) / float64(total)
	}
	return fmt.Sprintf("trainable params: %s || all params: %s || trainable%%: %.4f",
		Commas(trainable), Commas(total), pct)
}

// TrainableSummary is FormatTrainable over m's parameters (requires_grad
// decides what counts as trainable; a tied parameter counts once).
func TrainableSummary(m nn.Module) string {
	return FormatTrainable(nn.CountParams(m))
}

// Commas formats n with thousands separators, as Python's "{:,d}".
func Commas(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// ComponentMatch reports whether name occurs in path as whole dotted
// components (PEFT's re.search(rf"(^|.*\.){name}($|\..*)") with name
// escaped): preceded by the start or ".", followed by the end or ".".
func ComponentMatch(path, name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i+len(name) <= len(path); i++ {
		j := strings.Index(path[i:], name)
		if j < 0 {
			return false
		}
		i += j
		end := i + len(name)
		if (i == 0 || path[i-1] == '.') && (end == len(path) || path[end] == '.') {
			return true
		}
	}
	return false
}
