package train

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/gopeft/peft/internal/fsutil"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/safetensors"
	"github.com/gopeft/peft/tensor"
)

// Files of a checkpoint-<step>/ folder besides what the model's Save
// writes (adapter_config.json + adapter_model.safetensors for a PEFT
// model, config.json + model.safetensors for a full model).
const (
	StateFile     = "trainer_state.json"    // step, position in the data, run shape
	OptimizerFile = "optimizer.safetensors" // AdamW moments and step
	ParamsFile    = "trainable.safetensors" // the trainable parameters' values, by name
	MetricsFile   = "metrics.jsonl"         // in OutputDir: one Record per line
	checkpointPfx = "checkpoint-"
)

// State is trainer_state.json: where a run stands. Every random draw of
// the run is a function of Seed and this position, so it is the whole
// random state.
type State struct {
	Step       int   `json:"global_step"`
	Epoch      int   `json:"epoch"`
	Micro      int   `json:"micro_batches_in_epoch"` // micro-batches of Epoch already consumed
	TotalSteps int   `json:"max_steps"`
	Seed       int64 `json:"seed"`
	Samples    int   `json:"train_samples"`
	BatchSize  int   `json:"batch_size"`
	GradAccum  int   `json:"gradient_accumulation_steps"`
	Shuffle    bool  `json:"shuffle"`
	// WorldSize is the number of data-parallel processes (absent: 1);
	// BatchSize is per process.
	WorldSize int `json:"world_size,omitempty"`
}

// saveCheckpoint writes OutputDir/checkpoint-<step>/ through a temporary
// folder and a rename, so a folder with that name is always complete.
func (t *Trainer) saveCheckpoint() error {
	final := filepath.Join(t.cfg.OutputDir, checkpointPfx+strconv.Itoa(t.step))
	if err := os.MkdirAll(t.cfg.OutputDir, 0o755); err != nil {
		return fmt.Errorf("train: checkpoint: %w", err)
	}
	cleanCheckpoints(t.cfg.OutputDir)
	tmp, err := os.MkdirTemp(t.cfg.OutputDir, ".tmp-"+checkpointPfx)
	if err != nil {
		return fmt.Errorf("train: checkpoint: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("train: checkpoint: %w", err)
	}
	if sv, ok := t.model.(interface{ Save(dir string) error }); ok {
		if err := sv.Save(tmp); err != nil {
			return fmt.Errorf("train: checkpoint: %w", err)
		}
	}
	tensors, err := nn.StateTensors(t.params, "")
	if err != nil {
		return fmt.Errorf("train: checkpoint: %w", err)
	}
	if err := safetensors.Write(filepath.Join(tmp, ParamsFile), tensors, map[string]string{"format": "pt"}); err != nil {
		return fmt.Errorf("train: checkpoint: %w", err)
	}
	if err := t.opt.SaveState(filepath.Join(tmp, OptimizerFile)); err != nil {
		return fmt.Errorf("train: checkpoint: %w", err)
	}
	st := State{Step: t.step, Epoch: t.epoch, Micro: t.micro, TotalSteps: t.total, Seed: t.cfg.Seed,
		Samples: t.samples, BatchSize: t.cfg.BatchSize, GradAccum: t.cfg.GradAccum, Shuffle: !t.cfg.NoShuffle}
	if t.world() > 1 {
		st.WorldSize = t.world()
	}
	js, _ := json.MarshalIndent(st, "", "  ")
	if err := fsutil.WriteFileAtomic(filepath.Join(tmp, StateFile), append(js, '\n')); err != nil {
		return fmt.Errorf("train: checkpoint: %w", err)
	}
	// A checkpoint of the same step already there (a resumed run saving
	// its step again) is moved aside first, not deleted, so a kill between
	// the renames leaves the old one to find (LatestCheckpoint) and restore
	// (cleanCheckpoints).
	aside := ""
	if _, err := os.Stat(final); err == nil {
		aside = filepath.Join(t.cfg.OutputDir, asidePfx+filepath.Base(final))
		if err := os.RemoveAll(aside); err != nil {
			return fmt.Errorf("train: checkpoint: %w", err)
		}
		if err := os.Rename(final, aside); err != nil {
			return fmt.Errorf("train: checkpoint: %w", err)
		}
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("train: checkpoint: %w", err)
	}
	syncDir(t.cfg.OutputDir)
	if aside != "" {
		os.RemoveAll(aside)
	}
	return nil
}

// asidePfx names a checkpoint moved aside while a new one of the same step
// is renamed into place.
const asidePfx = ".old-"

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

// cleanCheckpoints repairs what a killed saveCheckpoint left in dir:
// temporary folders (and metrics.jsonl's temp files) are removed; a checkpoint moved aside is put back when
// its replacement never arrived, removed otherwise. Called before each
// save and resume (dir must not be shared by two running trainers).
func cleanCheckpoints(dir string) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		n := e.Name()
		switch {
		case strings.HasPrefix(n, ".tmp-"+checkpointPfx), strings.HasPrefix(n, "."+MetricsFile+".tmp"):
			os.RemoveAll(filepath.Join(dir, n))
		case strings.HasPrefix(n, asidePfx+checkpointPfx):
			final := filepath.Join(dir, strings.TrimPrefix(n, asidePfx))
			if _, err := os.Stat(final); err == nil {
				os.RemoveAll(filepath.Join(dir, n))
			} else {
				os.Rename(filepath.Join(dir, n), final)
			}
		}
	}
}

// LatestCheckpoint is the checkpoint-<step> folder of dir with the
// highest step.
func LatestCheckpoint(dir string) (string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("train: %w", err)
	}
	best, bestStep := "", -1
	for _, e := range entries {
		// a checkpoint moved aside counts when a kill stopped its
		// replacement before the rename (the name without the prefix is absent)
		name, aside := strings.CutPrefix(e.Name(), asidePfx)
		n, ok := strings.CutPrefix(name, checkpointPfx)
		if !ok || !e.IsDir() {
			continue
		}
		if aside {
			if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
				continue
			}
		}
		if step, err := strconv.Atoi(n); err == nil && step > bestStep {
			best, bestStep = filepath.Join(dir, e.Name()), step
		}
	}
	if best == "" {
		return "", fmt.Errorf("train: no %s<step> folder in %s", checkpointPfx, dir)
	}
	return best, nil
}

// ReadState reads a checkpoint's trainer_state.json.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		return nil, fmt.Errorf("train: resume: %w", err)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("train: resume: %s: %w", filepath.Join(dir, StateFile), err)
	}
	return &st, nil
}

// resume restores parameters, optimizer state and position from
// cfg.ResumeFrom for a training set of n samples.
func (t *Trainer) resume(n int) error {
	dir := t.cfg.ResumeFrom
	if t.cfg.OutputDir != "" {
		cleanCheckpoints(t.cfg.OutputDir)
	}
	if dir == "latest" {
		var err error
		if dir, err = LatestCheckpoint(t.cfg.OutputDir); err != nil {
			return err
		}
	}
	st, err := ReadState(dir)
	if err != nil {
		return err
	}
	mismatch := func(what string, was, now any) error {
		return fmt.Errorf("train: resume from %s: the run had %s %v, this one %v; the data order would differ", dir, what, was, now)
	}
	switch {
	case st.Samples != n:
		return mismatch("training samples", st.Samples, n)
	case st.BatchSize != t.cfg.BatchSize:
		return mismatch("batch size", st.BatchSize, t.cfg.BatchSize)
	case st.GradAccum != t.cfg.GradAccum:
		return mismatch("gradient accumulation", st.GradAccum, t.cfg.GradAccum)
	case st.Seed != t.cfg.Seed:
		return mismatch("seed", st.Seed, t.cfg.Seed)
	case st.Shuffle == t.cfg.NoShuffle:
		return mismatch("shuffle", st.Shuffle, !t.cfg.NoShuffle)
	case max(st.WorldSize, 1) != t.world():
		return mismatch("world size (processes)", max(st.WorldSize, 1), t.world())
	}
	if err := loadParams(t.params, filepath.Join(dir, ParamsFile)); err != nil {
		return err
	}
	if err := t.opt.LoadState(filepath.Join(dir, OptimizerFile)); err != nil {
		return fmt.Errorf("train: resume: %w", err)
	}
	if t.opt.Steps() != st.Step {
		return fmt.Errorf("train: resume from %s: the optimizer made %d steps, the trainer state says %d", dir, t.opt.Steps(), st.Step)
	}
	t.step, t.epoch, t.micro = st.Step, st.Epoch, st.Micro
	return nil
}

// loadParams copies saved values into params (every one must be in the
// file with its shape; nothing is written unless all are).
func loadParams(params []nn.NamedParam, path string) error {
	set, err := safetensors.OpenFiles(path)
	if err != nil {
		return fmt.Errorf("train: resume: %w", err)
	}
	defer set.Close()
	s := tensor.NoGradScope()
	defer s.Close()
	vals := make([]*tensor.T, len(params))
	for i, np := range params {
		v, err := nn.TensorFromFile(s, set, np.Name, np.Param.DType())
		if err != nil {
			return fmt.Errorf("train: resume: %w", err)
		}
		if !nn.SameShape(v.Shape(), np.Param.Shape()) {
			return fmt.Errorf("train: resume: %s: %q has shape %v, the model's parameter %v", path, np.Name, v.Shape(), np.Param.Shape())
		}
		vals[i] = v
	}
	if len(set.Names()) != len(params) {
		return fmt.Errorf("train: resume: %s has %d tensors, the model %d trainable parameters", path, len(set.Names()), len(params))
	}
	for i, np := range params {
		s.CopyInto(np.Param.T(), vals[i])
	}
	if err := s.Err(); err != nil {
		return fmt.Errorf("train: resume: %w", err)
	}
	return nil
}

// metricsWriter appends Records to OutputDir/metrics.jsonl (a no-op
// without OutputDir).
type metricsWriter struct{ f *os.File }

func (w *metricsWriter) Close() error {
	if w.f == nil {
		return nil
	}
	return w.f.Close()
}

// openMetrics opens metrics.jsonl: a new run starts it afresh; a resumed
// run keeps the records up to its step and appends after them.
func (t *Trainer) openMetrics() (*metricsWriter, error) {
	if t.cfg.OutputDir == "" {
		return &metricsWriter{}, nil
	}
	if err := os.MkdirAll(t.cfg.OutputDir, 0o755); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	path := filepath.Join(t.cfg.OutputDir, MetricsFile)
	var keep bytes.Buffer
	if t.step > 0 {
		if b, err := os.ReadFile(path); err == nil {
			sc := bufio.NewScanner(bytes.NewReader(b))
			sc.Buffer(make([]byte, 64<<10), 16<<20)
			for sc.Scan() {
				var r Record
				if json.Unmarshal(sc.Bytes(), &r) == nil && r.Step <= t.step {
					keep.Write(sc.Bytes())
					keep.WriteByte('\n')
				}
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("train: %w", err)
		}
	}
	if err := fsutil.WriteFileAtomic(path, keep.Bytes()); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	return &metricsWriter{f: f}, nil
}

// record keeps r in History and appends it to metrics.jsonl.
func (t *Trainer) record(w *metricsWriter, r Record) error {
	t.History = append(t.History, r)
	if w.f == nil {
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := w.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("train: %s: %w", MetricsFile, err)
	}
	return nil
}
