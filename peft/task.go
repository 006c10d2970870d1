package peft

import (
	"fmt"
	"strings"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
)

// What differs per task type (PEFT's task wrappers, PeftModelFor…):
//
//   - CAUSAL_LM: prompt learning prepends P labels of -100, drops explicit
//     position ids for prompt tuning / P-tuning and shifts them by P for
//     prefix tuning; token type ids are dropped.
//   - SEQ_CLS, TOKEN_CLS (and QUESTION_ANS): the task head ("classifier"
//     or "score"; "qa_outputs") is added to modules_to_save — a trainable
//     copy per adapter, saved with the adapter — for every method,
//     prompt learning included; selective methods (BitFit, freeze) train
//     the head's own parameters instead and save them with the chosen
//     ones. Prompt learning leaves the labels alone (for TOKEN_CLS the
//     caller pads them for the virtual tokens), drops position ids,
//     prefixes token type ids with P zeros for prompt tuning / P-tuning and
//     keeps them for prefix tuning.
//   - FEATURE_EXTRACTION: no head; prompt learning as for SEQ_CLS, with
//     token type ids dropped.
//
// The model's task type is the first adapter's (an empty one is
// CAUSAL_LM, what the methods fill in).

// taskHeads are the module names PEFT adds to modules_to_save per task.
var taskHeads = map[TaskType][]string{
	SeqCls:      {"classifier", "score"},
	TokenCls:    {"classifier", "score"},
	QuestionAns: {"qa_outputs"},
}

// normTask maps an unset task type to CAUSAL_LM.
func normTask(t TaskType) TaskType {
	if t == "" {
		return CausalLM
	}
	return t
}

// TaskType is the model's task type (the first adapter's; CAUSAL_LM when
// that adapter left it unset).
func (m *Model) TaskType() TaskType { return normTask(m.task) }

// TypeName prints PEFT's class name for the task type.
func (m *Model) TypeName() string {
	switch m.TaskType() {
	case CausalLM:
		return "PeftModelForCausalLM"
	case SeqCls:
		return "PeftModelForSequenceClassification"
	case TokenCls:
		return "PeftModelForTokenClassification"
	case QuestionAns:
		return "PeftModelForQuestionAnswering"
	case FeatureExtraction:
		return "PeftModelForFeatureExtraction"
	case Seq2SeqLM:
		return "PeftModelForSeq2SeqLM"
	}
	return "PeftModel"
}

// headModules lists the task heads the model has, as modules_to_save
// entries: the names of taskHeads that some module path ends with (PEFT's
// suffix match), skipping a head another method already wrapped.
func (m *Model) headModules() []string {
	var out []string
	base := m.BaseModel.Model
	for _, h := range taskHeads[m.TaskType()] {
		for _, path := range nn.Paths(base) {
			if !strings.HasSuffix(path, h) || isInsideWrapper(base, path) {
				continue
			}
			mod, _ := nn.Get(base, path)
			if t, ok := mod.(Tuner); ok {
				if _, mts := t.(*ModulesToSave); !mts {
					continue
				}
			}
			out = append(out, h)
			break
		}
	}
	return out
}

// withHeads is cfg's modules_to_save plus the task heads (once each).
func (m *Model) withHeads(entries []string) []string {
	out := append([]string(nil), entries...)
	for _, h := range m.headModules() {
		if !contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// headParams lists the task heads' own parameters (selective methods train
// them), under their names in the wrapped model.
func (m *Model) headParams() []nn.NamedParam {
	heads := m.headModules()
	var out []nn.NamedParam
	for _, np := range baseParams(m.BaseModel.Model) {
		mod := np.Name[:max(0, strings.LastIndex(np.Name, "."))]
		for _, h := range heads {
			if strings.HasSuffix(mod, h) {
				out = append(out, np)
				break
			}
		}
	}
	return out
}

// checkPromptTask refuses prompt learning whose task type does not fit the
// model: CAUSAL_LM pads labels per token, which a classifier's labels are
// not.
func checkPromptTask(base models.Model, cfg Config) error {
	if _, isCls := base.(models.Classifier); isCls && normTask(cfg.TaskType()) == CausalLM {
		return fmt.Errorf("peft: task_type CAUSAL_LM does not fit %s (a classifier): set task_type to SEQ_CLS or TOKEN_CLS", nn.TypeName(base))
	}
	return nil
}

// promptHeadState lists adapter name's modules_to_save copies under PEFT's
// keys for a prompt-learning model, whose base model is not wrapped in a
// tuner: base_model.<path>.<param> (base_model.classifier.weight).
func (m *Model) promptHeadState(name string) []nn.NamedParam {
	var out []nn.NamedParam
	for _, pt := range tuners(m.BaseModel.Model) {
		if _, ok := pt.tuner.(*ModulesToSave); !ok {
			continue
		}
		for _, np := range pt.tuner.AdapterState(name) {
			out = append(out, nn.NamedParam{Name: "base_model." + pt.path + "." + np.Name, Param: np.Param})
		}
	}
	return out
}
