package prompt

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
)

// MultitaskPromptTuning is multitask prompt tuning's peft_type.
const MultitaskPromptTuning peft.PeftType = "MULTITASK_PROMPT_TUNING"

// prompt_tuning_init values of multitask prompt tuning beyond RANDOM, TEXT
// (and SAMPLE_VOCAB, which current PEFT's PromptEmbedding also accepts
// here): initialisations from a source-training adapter
// (prompt_tuning_init_state_dict_path).
const (
	AverageSourceTasks = "AVERAGE_SOURCE_TASKS" // shared table, and the mean of the source tasks' cols and rows
	ExactSourceTask    = "EXACT_SOURCE_TASK"    // shared table, and source task prompt_tuning_init_task's cols and rows
	OnlySourceShared   = "ONLY_SOURCE_SHARED"   // the shared table only
)

func init() { peft.Register(MultitaskPromptTuning, DecodeMultitask) }

// MultitaskConfig is PEFT's MultitaskPromptTuningConfig (peft_type
// MULTITASK_PROMPT_TUNING; Wang et al. 2023, https://arxiv.org/abs/2303.02861):
// prompt tuning whose P virtual tokens are, for a row of task t, the
// shared table scaled element-wise by a rank-num_ranks matrix of the task,
//
//	prompt(t) = prompt_embeddings ⊙ (prefix_task_cols[t] @ prefix_task_rows[t])
//
// with prefix_task_cols [num_tasks, P, num_ranks] and prefix_task_rows
// [num_tasks, num_ranks, token_dim]. Every forward and generation needs
// the rows' task ids (models.Inputs.TaskIDs, generate.Input.TaskIDs). It
// extends TuningConfig as PEFT's config extends PromptTuningConfig; a
// MultitaskConfig is a plain value, not safe for concurrent mutation.
type MultitaskConfig struct {
	TuningConfig
	// PromptTuningInitStateDictPath is the source adapter for the
	// AVERAGE_SOURCE_TASKS, EXACT_SOURCE_TASK and ONLY_SOURCE_SHARED inits:
	// a .safetensors file (or a folder holding adapter_model.safetensors)
	// with prompt_embeddings, prefix_task_cols and prefix_task_rows. PEFT
	// also reads torch.save pickles, which this library cannot.
	PromptTuningInitStateDictPath string `json:"prompt_tuning_init_state_dict_path"`
	// PromptTuningInitTask is the source task EXACT_SOURCE_TASK copies.
	PromptTuningInitTask int `json:"prompt_tuning_init_task"`
	// NumRanks is the rank of each task's matrix (default 1).
	NumRanks int `json:"num_ranks"`
	// NumTasks is the number of tasks (default 1).
	NumTasks int `json:"num_tasks"`
}

func (c *MultitaskConfig) PeftType() peft.PeftType { return MultitaskPromptTuning }

// DecodeMultitask parses adapter_config.json of a MULTITASK_PROMPT_TUNING
// adapter.
func DecodeMultitask(data []byte) (peft.Config, error) {
	c := &MultitaskConfig{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &c.raw); err != nil {
		return nil, err
	}
	return c, c.validate()
}

func (c *MultitaskConfig) validate() error {
	switch c.PromptTuningInit {
	case "", Random, Text, SampleVocab, AverageSourceTasks, ExactSourceTask, OnlySourceShared:
	default:
		return fmt.Errorf("field \"prompt_tuning_init\": %q is not one of RANDOM, TEXT, SAMPLE_VOCAB, AVERAGE_SOURCE_TASKS, EXACT_SOURCE_TASK, ONLY_SOURCE_SHARED", c.PromptTuningInit)
	}
	if c.NumRanks < 0 {
		return fmt.Errorf("field \"num_ranks\" must be positive, got %d", c.NumRanks)
	}
	if c.NumTasks < 0 {
		return fmt.Errorf("field \"num_tasks\" must be positive, got %d", c.NumTasks)
	}
	if c.PromptTuningInitTask < 0 { // it indexes the source adapter's tasks, checked when that is read
		return fmt.Errorf("field \"prompt_tuning_init_task\" must not be negative, got %d", c.PromptTuningInitTask)
	}
	if len(c.TokenizerKwargs) > 0 && c.PromptTuningInit != Text {
		return fmt.Errorf("field \"tokenizer_kwargs\" is only valid with prompt_tuning_init TEXT")
	}
	return nil
}

// tasks and ranks with PEFT's defaults (1) for unset fields.
func (c *MultitaskConfig) tasks() int64 { return int64(max(c.NumTasks, 1)) }
func (c *MultitaskConfig) ranks() int64 { return int64(max(c.NumRanks, 1)) }

// MarshalJSON renders adapter_config.json with PEFT 0.10's keys.
func (c *MultitaskConfig) MarshalJSON() ([]byte, error) {
	js, err := c.TuningConfig.MarshalJSON()
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if err := json.Unmarshal(js, &out); err != nil {
		return nil, err
	}
	out["prompt_tuning_init_state_dict_path"] = nullString(c.PromptTuningInitStateDictPath)
	out["prompt_tuning_init_task"] = c.PromptTuningInitTask
	out["num_ranks"] = c.ranks()
	out["num_tasks"] = c.tasks()
	out["peft_type"] = MultitaskPromptTuning
	return peft.EncodeConfig(out)
}

// MultitaskEmbedding is PEFT's MultitaskPromptEmbedding: the shared table
// (prompt_encoder.<adapter>.embedding.weight [P, token_dim], saved as
// prompt_embeddings) and the task factors prefix_task_cols
// [num_tasks, P, num_ranks] and prefix_task_rows [num_tasks, num_ranks,
// token_dim]. It is a peft.TaskPromptEncoder. Forwards may run
// concurrently; training changes it.
type MultitaskEmbedding struct {
	Embedding      *nn.Embedding `nn:"embedding"`
	PrefixTaskCols *nn.Param     `nn:"prefix_task_cols"`
	PrefixTaskRows *nn.Param     `nn:"prefix_task_rows"`
}

func (*MultitaskEmbedding) TypeName() string { return "MultitaskPromptEmbedding" }

// Prompt implements peft.PromptEncoder: the shared table (what PEFT saves
// as prompt_embeddings); the rows' prompts come from TaskPrompt.
func (e *MultitaskEmbedding) Prompt(*tensor.Scope) *tensor.T { return e.Embedding.Weight.T() }

// Table implements peft.PromptEncoder.
func (e *MultitaskEmbedding) Table() *nn.Param { return e.Embedding.Weight }

// TaskPrompt implements peft.TaskPromptEncoder: for each row the table
// times its task's cols @ rows, [B, P, token_dim].
func (e *MultitaskEmbedding) TaskPrompt(s *tensor.Scope, taskIDs *tensor.T) *tensor.T {
	n := e.PrefixTaskCols.Shape()[0]
	for i, id := range s.Int64s(taskIDs) {
		if id < 0 || id >= n {
			return s.Failf("multitask prompt tuning: task_ids[%d] = %d, the adapter has %d tasks (num_tasks)", i, id, n)
		}
	}
	ids := taskIDs
	if d := e.PrefixTaskCols.T().Device(); ids.Device() != d {
		ids = s.ToDevice(ids, d)
	}
	cols := s.IndexSelect(e.PrefixTaskCols.T(), 0, ids) // [B, P, R]
	rows := s.IndexSelect(e.PrefixTaskRows.T(), 0, ids) // [B, R, dim]
	table := e.Embedding.Weight.T()
	B := taskIDs.Size(0)
	return s.Mul(s.Expand(s.Unsqueeze(table, 0), B, -1, -1), s.Matmul(cols, rows))
}

// TaskState implements peft.TaskPromptEncoder: PEFT's keys.
func (e *MultitaskEmbedding) TaskState() []nn.NamedParam {
	return []nn.NamedParam{{Name: "prefix_task_cols", Param: e.PrefixTaskCols}, {Name: "prefix_task_rows", Param: e.PrefixTaskRows}}
}

// NewPromptEncoder implements peft.PromptConfig: fills the model-derived
// fields, checks token_dim, and builds the table (RANDOM, TEXT,
// SAMPLE_VOCAB, or from the source adapter) and the task factors (N(0,
// 0.02), or from the source adapter); zeros for an adapter a saved file
// fills (no init runs then, and no source file is read).
func (c *MultitaskConfig) NewPromptEncoder(base models.CausalLM, inference bool) (peft.PromptEncoder, error) {
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	d, err := c.Prepare(base)
	if err != nil {
		return nil, fmt.Errorf("prompt: %w", err)
	}
	if err := checkTokenDim(c.TokenDim, d); err != nil {
		return nil, err
	}
	if c.PromptTuningInit == "" {
		c.PromptTuningInit = Random
	}
	if c.NumTasks == 0 {
		c.NumTasks = 1
	}
	if c.NumRanks == 0 {
		c.NumRanks = 1
	}
	p, dim, T, R := c.VirtualTokens(), int64(c.TokenDim), c.tasks(), c.ranks()
	s := tensor.NoGradScope()
	defer s.Close()
	if inference {
		return c.encoder(s, s.Zeros(tensor.Float32, p, dim), s.Zeros(tensor.Float32, T, p, R), s.Zeros(tensor.Float32, T, R, dim))
	}
	cols := s.MulScalar(s.Randn(tensor.Float32, T, p, R), 0.02)
	rows := s.MulScalar(s.Randn(tensor.Float32, T, R, dim), 0.02)
	var table *tensor.T
	switch c.PromptTuningInit {
	case Random:
		table = s.Randn(tensor.Float32, p, dim)
	case Text:
		ids, err := c.textIDs(p, d.VocabSize)
		if err != nil {
			return nil, err
		}
		if table, err = wordEmbeddings(s, base, s.FromInt64(ids, p)); err != nil {
			return nil, err
		}
	case SampleVocab:
		if table, err = wordEmbeddings(s, base, s.Randint(d.VocabSize, p)); err != nil {
			return nil, err
		}
	default:
		if table, cols, rows, err = c.fromSource(s, p, dim, T, R, cols, rows); err != nil {
			return nil, err
		}
	}
	return c.encoder(s, table, cols, rows)
}

func (c *MultitaskConfig) encoder(s *tensor.Scope, table, cols, rows *tensor.T) (*MultitaskEmbedding, error) {
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("prompt: multitask init: %w", err)
	}
	return &MultitaskEmbedding{
		Embedding:      &nn.Embedding{Weight: nn.NewParam(s.Keep(s.Contiguous(table)))},
		PrefixTaskCols: nn.NewParam(s.Keep(s.Contiguous(cols))),
		PrefixTaskRows: nn.NewParam(s.Keep(s.Contiguous(rows))),
	}, nil
}

// fromSource reads the source adapter of the *_SOURCE_* inits, as PEFT's
// MultitaskPromptEmbedding does: the table always, and the cols and rows
// of one task (EXACT_SOURCE_TASK) or their mean over tasks
// (AVERAGE_SOURCE_TASKS), which PEFT loads strictly — so those two need
// num_tasks 1.
func (c *MultitaskConfig) fromSource(s *tensor.Scope, p, dim, T, R int64, cols, rows *tensor.T) (table, outCols, outRows *tensor.T, err error) {
	path := c.PromptTuningInitStateDictPath
	if path == "" {
		return nil, nil, nil, fmt.Errorf("prompt: field \"prompt_tuning_init_state_dict_path\" needs to be specified with %s init method", c.PromptTuningInit)
	}
	if st, serr := os.Stat(path); serr == nil && st.IsDir() {
		path = filepath.Join(path, peft.WeightsName)
	}
	if !strings.HasSuffix(path, ".safetensors") {
		return nil, nil, nil, fmt.Errorf("prompt: prompt_tuning_init_state_dict_path %q: only .safetensors files can be read (PEFT also reads torch.save pickles; save the source adapter with safetensors)", path)
	}
	set, err := safetensors.OpenFiles(path)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("prompt: prompt_tuning_init_state_dict_path: %w", err)
	}
	defer set.Close()
	read := func(key string, want ...int64) (*tensor.T, error) {
		info, _, ok := set.Info(key)
		if !ok {
			return nil, fmt.Errorf("prompt: %s: no tensor %q (a multitask prompt tuning adapter holds prompt_embeddings, prefix_task_cols, prefix_task_rows)", path, key)
		}
		if want != nil && !nn.SameShape(info.Shape, want) {
			return nil, fmt.Errorf("prompt: %s: %q has shape %v, the adapter needs %v", path, key, info.Shape, want)
		}
		return nn.TensorFromFile(s, set, key, tensor.Float32)
	}
	if table, err = read(peft.PromptEmbeddingsKey, p, dim); err != nil {
		return nil, nil, nil, err
	}
	if c.PromptTuningInit == OnlySourceShared {
		return table, cols, rows, nil
	}
	if T != 1 {
		return nil, nil, nil, fmt.Errorf("prompt: %s init gives one task's prefix_task_cols and prefix_task_rows, which PEFT loads strictly: field \"num_tasks\" must be 1, got %d", c.PromptTuningInit, T)
	}
	sc, err := read("prefix_task_cols")
	if err != nil {
		return nil, nil, nil, err
	}
	sr, err := read("prefix_task_rows")
	if err != nil {
		return nil, nil, nil, err
	}
	if cs, rs := sc.Shape(), sr.Shape(); len(cs) != 3 || len(rs) != 3 || cs[1] != p || cs[2] != R || rs[0] != cs[0] || rs[1] != R || rs[2] != dim {
		return nil, nil, nil, fmt.Errorf("prompt: %s: prefix_task_cols %v and prefix_task_rows %v do not fit [tasks, %d, %d] and [tasks, %d, %d]", path, cs, rs, p, R, R, dim)
	}
	if c.PromptTuningInit == AverageSourceTasks {
		return table, s.Mean(sc, true, 0), s.Mean(sr, true, 0), nil
	}
	n := sc.Size(0)
	if k := int64(c.PromptTuningInitTask); k < 0 || k >= n {
		return nil, nil, nil, fmt.Errorf("prompt: field \"prompt_tuning_init_task\": %d, the source adapter has %d tasks", k, n)
	}
	k := int64(c.PromptTuningInitTask)
	return table, s.Unsqueeze(s.Select(sc, 0, k), 0), s.Unsqueeze(s.Select(sr, 0, k), 0), nil
}

var (
	_ peft.PromptConfig      = (*MultitaskConfig)(nil)
	_ peft.TaskPromptEncoder = (*MultitaskEmbedding)(nil)
)
