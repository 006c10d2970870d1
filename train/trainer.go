package train

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/gopeft/peft/charts"
	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/dist"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// Model is what the Trainer trains: anything with the library's forward
// pass. Its trainable parameters come from TrainableParams() when it has
// that method (peft.Model), else from every parameter that requires grad
// (nn.TrainableParams: full fine-tuning of a base model). Checkpoints call
// its Save(dir) when it has one (a PEFT adapter folder, or a HF model
// folder).
type Model interface {
	ForwardT(s *tensor.Scope, b *models.Batch) *models.Output
}

// StepHook is implemented by models whose method acts after every
// optimizer step while the gradients are still there: peft.Model, for
// AdaLoRA's rank allocation (PEFT's update_and_allocate(global_step)).
// The Trainer calls AfterOptimizerStep after the optimizer's step and
// before it zeroes the gradients; step counts from 0 (PEFT's global_step
// of the step just taken). In a data-parallel run every rank calls it on
// the same reduced gradients. State the hook keeps (AdaLoRA's
// sensitivities) is not part of a checkpoint: a resumed run starts it
// afresh.
type StepHook interface {
	AfterOptimizerStep(step int) error
}

// Config is the Trainer's settings, named after HF TrainingArguments. Zero
// values take the defaults in brackets.
type Config struct {
	// LR is the peak learning rate [5e-5].
	LR float64
	// WeightDecay is AdamW's decoupled decay [0].
	WeightDecay float64
	// Beta1, Beta2, Eps are AdamW's [0.9, 0.999, 1e-8].
	Beta1, Beta2, Eps float64
	// Schedule is "linear" [default], "cosine" or "constant", after a
	// warmup of WarmupSteps steps (or WarmupRatio of all steps).
	Schedule    string
	WarmupSteps int
	WarmupRatio float64
	// MaxGradNorm clips the global gradient norm (0: no clipping; HF
	// uses 1.0).
	MaxGradNorm float64

	// BatchSize is the number of samples per forward pass [8]; GradAccum
	// the number of such micro-batches per optimizer step [1].
	BatchSize int
	GradAccum int
	// Epochs over the training set [1]; MaxSteps > 0 sets the number of
	// optimizer steps instead.
	Epochs   int
	MaxSteps int
	// NoShuffle keeps the dataset's order; otherwise every epoch has its
	// own permutation drawn from Seed.
	NoShuffle bool
	// Seed fixes the shuffling and every random draw of training (dropout):
	// libtorch's generator is seeded from (Seed, step, micro-batch) before
	// each forward pass, so a run is reproducible and a resumed run draws
	// what the uninterrupted one drew.
	Seed int64

	// LoraPlusLRRatio > 0 trains with LoRA+ (PEFT's
	// create_loraplus_optimizer; LLaMA-Factory's loraplus_lr_ratio): lora_B
	// (and one-dimensional parameters) at LR × the ratio, the rest at LR,
	// biases and norm weights without weight decay (LoraPlusGroups). The
	// schedule scales every group alike.
	LoraPlusLRRatio float64
	// LoraPlusLREmbedding is the learning rate of LoRA adapters on
	// embedding layers under LoRA+ [DefaultLoraPlusLREmbedding = 1e-6].
	LoraPlusLREmbedding float64

	// Checkpointing turns on activation checkpointing per decoder layer
	// (models.Checkpoint): less memory, one more forward pass per step.
	Checkpointing bool

	// EvalSteps evaluates on the eval set every that many steps (and at
	// the end); 0: only at the end. EvalBatchSize [BatchSize].
	EvalSteps     int
	EvalBatchSize int
	// LogSteps prints a progress line every that many steps [10] (and at
	// the last one).
	LogSteps int
	// SaveSteps writes a checkpoint every that many steps; one is always
	// written at the end when OutputDir is set.
	SaveSteps int
	// OutputDir receives checkpoint-<step>/ folders and metrics.jsonl
	// ("": no files).
	OutputDir string
	// PlotCurves draws OutputDir/curves.svg and curves.png (train loss,
	// eval loss, learning rate against the step: charts.Curves over
	// metrics.jsonl) at the end of the run, by rank 0.
	PlotCurves bool
	// ResumeFrom continues from a checkpoint folder, or from the newest
	// one in OutputDir with "latest".
	ResumeFrom string
	// Progress receives the progress lines [os.Stderr]; io.Discard
	// silences them. In a data-parallel run only rank 0 prints.
	Progress io.Writer

	// Dist is the process group of a data-parallel run; nil: the one the
	// environment describes (dist.Default: torchrun's RANK, WORLD_SIZE,
	// MASTER_ADDR, MASTER_PORT), or a single process when WORLD_SIZE is
	// unset or 1. With W ranks, BatchSize is per rank: a step sees
	// BatchSize × W × GradAccum samples, the same ones and (up to float
	// rounding) the same gradient as one process with BatchSize × W.
	// Rank 0's parameters are broadcast at the start; only rank 0 writes
	// checkpoints and metrics.jsonl; resuming needs the same world size and
	// the checkpoint readable by every rank.
	Dist *dist.Group
}

func (c *Config) defaults() {
	if c.LR == 0 {
		c.LR = 5e-5
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 8
	}
	if c.GradAccum <= 0 {
		c.GradAccum = 1
	}
	if c.Epochs <= 0 {
		c.Epochs = 1
	}
	if c.EvalBatchSize <= 0 {
		c.EvalBatchSize = c.BatchSize
	}
	if c.LogSteps <= 0 {
		c.LogSteps = 10
	}
	if c.Progress == nil {
		c.Progress = os.Stderr
	}
}

// Record is one line of metrics.jsonl: a training step (Loss, LR,
// GradNorm, …) or an evaluation (EvalLoss, EvalPPL).
type Record struct {
	Step       int      `json:"step"`
	Epoch      float64  `json:"epoch"`
	Loss       *float64 `json:"loss,omitempty"`
	LR         *float64 `json:"lr,omitempty"`
	GradNorm   *float64 `json:"grad_norm,omitempty"`
	Tokens     int      `json:"tokens,omitempty"`
	TokensPerS float64  `json:"tokens_per_s,omitempty"`
	EvalLoss   *float64 `json:"eval_loss,omitempty"`
	EvalPPL    *float64 `json:"eval_ppl,omitempty"`
}

// Trainer trains a model on a data.Dataset: AdamW with weight decay, a
// warmup + linear/cosine schedule, gradient accumulation, gradient
// clipping, periodic evaluation (loss and perplexity), progress lines,
// metrics as JSONL, checkpoints and resumption. Losses are token-weighted:
// the loss of a step is the mean over every target token of its
// micro-batches, so accumulating k micro-batches gives the gradient of one
// batch k times as large.
type Trainer struct {
	model  Model
	cfg    Config
	params []nn.NamedParam
	opt    *AdamW
	dist   *dist.Group // nil: a single process

	step  int       // optimizer steps done
	epoch int       // current epoch
	micro int       // micro-batches of the current epoch consumed
	total int       // optimizer steps of the run
	out   io.Writer // progress lines (Config.Progress; rank 0 only)

	samples     int // training samples of the run
	prevElapsed float64
	logTokens   int     // tokens since the last progress line
	logElapsed  float64 // time of the last progress line
	// History holds this run's metric records (from the resumed step on).
	History []Record
}

// New makes a trainer; the optimizer is created over the model's
// trainable parameters at Fit.
func New(model Model, cfg Config) *Trainer {
	cfg.defaults()
	return &Trainer{model: model, cfg: cfg}
}

// Step is the number of optimizer steps done.
func (t *Trainer) Step() int { return t.step }

// Losses returns the training loss of every step in History.
func (t *Trainer) Losses() []float64 {
	var out []float64
	for _, r := range t.History {
		if r.Loss != nil {
			out = append(out, *r.Loss)
		}
	}
	return out
}

// trainableParams lists what trains (see Model).
func trainableParams(m Model) ([]nn.NamedParam, error) {
	if p, ok := m.(interface{ TrainableParams() []nn.NamedParam }); ok {
		return p.TrainableParams(), nil
	}
	if mod, ok := m.(nn.Module); ok {
		return nn.TrainableParams(mod), nil
	}
	return nil, errors.New("train: the model has neither TrainableParams() nor a module tree")
}

// plan is the shape of a run over n training samples (micro-batches are
// global: BatchSize samples per rank).
func (t *Trainer) plan(n int) (microPerEpoch, stepsPerEpoch int) {
	global := t.cfg.BatchSize * t.world()
	microPerEpoch = (n + global - 1) / global
	stepsPerEpoch = (microPerEpoch + t.cfg.GradAccum - 1) / t.cfg.GradAccum
	return
}

// Fit trains on train, evaluating on eval (nil: no evaluation). The model
// is in training mode (dropout on) while it runs and in eval mode after.
func (t *Trainer) Fit(train, eval *data.Dataset) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cfg := &t.cfg
	if train == nil || train.Len() == 0 {
		return errors.New("train: empty training set")
	}
	params, err := trainableParams(t.model)
	if err != nil {
		return err
	}
	if len(params) == 0 {
		return errors.New("train: the model has no trainable parameters")
	}
	t.params = params
	t.samples = train.Len()
	if t.dist, err = t.group(); err != nil {
		return err
	}
	defer func() { t.dist = nil }()
	t.out = cfg.Progress
	if t.rank() != 0 {
		t.out = io.Discard
	}
	rank, world := t.rank(), t.world()
	microPerEpoch, stepsPerEpoch := t.plan(train.Len())
	t.total = cfg.MaxSteps
	if t.total <= 0 {
		t.total = cfg.Epochs * stepsPerEpoch
	}
	warmup := cfg.WarmupSteps
	if warmup == 0 && cfg.WarmupRatio > 0 {
		warmup = int(math.Ceil(cfg.WarmupRatio * float64(t.total)))
	}
	if _, err := LRAt(cfg.Schedule, cfg.LR, 0, warmup, t.total); err != nil {
		return err
	}
	if t.opt, err = t.newOptimizer(params); err != nil {
		return err
	}
	defer func() { t.opt.Free(); t.opt = nil }()
	t.step, t.epoch, t.micro = 0, 0, 0
	t.History = nil
	if cfg.ResumeFrom != "" {
		if err := t.agree("resume", t.resume(train.Len())); err != nil {
			return err
		}
	}
	metrics := &metricsWriter{}
	if rank == 0 {
		metrics, err = t.openMetrics()
	}
	if err := t.agree("open "+MetricsFile, err); err != nil {
		return err
	}
	defer metrics.Close()
	if t.dist != nil {
		if err := t.checkSameRun(train); err != nil {
			return err
		}
		if err := t.broadcastParams(); err != nil {
			return err
		}
	}
	if mod, ok := t.model.(nn.Module); ok {
		nn.SetTraining(mod, true)
		defer nn.SetTraining(mod, false)
	}
	if err := t.opt.ZeroGrad(); err != nil {
		return err
	}
	col := data.Collator{PadID: train.PadID}
	var order []int
	orderEpoch := -1
	start := time.Now()
	startStep := t.step
	t.prevElapsed, t.logTokens, t.logElapsed = 0, 0, 0
	for t.step < t.total {
		if t.micro >= microPerEpoch {
			t.epoch++
			t.micro = 0
		}
		if orderEpoch != t.epoch {
			order = data.Order(train.Len(), cfg.Seed, t.epoch, !cfg.NoShuffle)
			orderEpoch = t.epoch
		}
		// the micro-batches of this step (not crossing the epoch's end):
		// this rank's share of each global one (nil when it has none), and
		// the target tokens of the whole step on every rank
		var batches []*data.Batch
		targets := 0
		for k := 0; k < cfg.GradAccum && t.micro < microPerEpoch; k++ {
			lo := t.micro * cfg.BatchSize * world
			hi := min(lo+cfg.BatchSize*world, len(order))
			for _, i := range order[lo:hi] {
				targets += train.Samples[i].Targets()
			}
			var b *data.Batch
			if mine := shard(order[lo:hi], rank, world); len(mine) > 0 {
				samples := make([]data.Sample, 0, len(mine))
				for _, i := range mine {
					samples = append(samples, train.Samples[i])
				}
				b = col.Collate(samples)
			}
			batches = append(batches, b)
			t.micro++
		}
		lr, _ := LRAt(cfg.Schedule, cfg.LR, t.step, warmup, t.total)
		if targets == 0 {
			return fmt.Errorf("train: step %d: no target tokens in the batch (every label is -100)", t.step+1)
		}
		sum, tokens, err := t.trainStep(batches, targets, lr)
		loss, tokens, some, err := t.reduceStep(sum, tokens, targets, err)
		if err == nil {
			err = t.reduceGrads(some)
		}
		if err != nil {
			return fmt.Errorf("train: step %d: %w", t.step+1, err)
		}
		norm, err := ClipGradNorm(params, cfg.MaxGradNorm)
		if err != nil {
			return err
		}
		t.opt.SetLR(lr)
		if err := t.opt.Step(); err != nil {
			return fmt.Errorf("train: step %d: %w", t.step+1, err)
		}
		if h, ok := t.model.(StepHook); ok {
			if err := h.AfterOptimizerStep(t.step); err != nil {
				return fmt.Errorf("train: step %d: %w", t.step+1, err)
			}
		}
		if err := t.opt.ZeroGrad(); err != nil {
			return err
		}
		t.step++
		elapsed := time.Since(start).Seconds()
		epochF := float64(t.epoch) + float64(t.micro)/float64(microPerEpoch)
		rec := Record{Step: t.step, Epoch: round(epochF, 4), Loss: &loss, LR: &lr, GradNorm: &norm, Tokens: tokens}
		if elapsed > 0 {
			rec.TokensPerS = round(float64(tokens)/t.lastStepSeconds(elapsed), 1)
		}
		if err := t.record(metrics, rec); err != nil {
			return err
		}
		last := t.step == t.total
		t.logTokens += tokens
		if t.step%cfg.LogSteps == 0 || last {
			t.progress(rec, elapsed, t.step-startStep)
		}
		if eval != nil && eval.Len() > 0 && ((cfg.EvalSteps > 0 && t.step%cfg.EvalSteps == 0) || last) {
			el, err := t.evaluate(eval)
			if err != nil {
				return err
			}
			ppl := math.Exp(el)
			if err := t.record(metrics, Record{Step: t.step, Epoch: rec.Epoch, EvalLoss: &el, EvalPPL: &ppl}); err != nil {
				return err
			}
			fmt.Fprintf(t.out, "eval step %d: loss %.4f  perplexity %.3f\n", t.step, el, ppl)
		}
		if cfg.OutputDir != "" && ((cfg.SaveSteps > 0 && t.step%cfg.SaveSteps == 0) || last) {
			var err error
			if rank == 0 {
				err = t.saveCheckpoint()
				if err == nil && last && cfg.PlotCurves {
					err = t.plotCurves()
				}
			}
			if err := t.agree(fmt.Sprintf("checkpoint at step %d", t.step), err); err != nil {
				return err
			}
		}
	}
	return nil
}

// plotCurves draws the run's metrics.jsonl as OutputDir/curves.{svg,png}.
func (t *Trainer) plotCurves() error {
	recs, err := charts.ReadMetrics(filepath.Join(t.cfg.OutputDir, MetricsFile))
	if err != nil {
		return fmt.Errorf("train: curves: %w", err)
	}
	files, err := charts.Curves(recs, filepath.Base(t.cfg.OutputDir), filepath.Join(t.cfg.OutputDir, "curves"))
	if err != nil {
		return fmt.Errorf("train: curves: %w", err)
	}
	fmt.Fprintf(t.out, "curves: %s\n", strings.Join(files, ", "))
	return nil
}

// lastStepSeconds is the duration of the step just done.
func (t *Trainer) lastStepSeconds(elapsed float64) float64 {
	d := elapsed - t.prevElapsed
	t.prevElapsed = elapsed
	if d <= 0 {
		return math.Inf(1)
	}
	return d
}

// trainStep runs forward and backward over this rank's micro-batches of a
// step (nil: none), each loss weighted by its share of the step's target
// tokens (over every rank); it returns the sum of the losses weighted by
// their target tokens, and the real tokens.
func (t *Trainer) trainStep(batches []*data.Batch, targets int, lr float64) (float64, int, error) {
	var sum float64
	tokens := 0
	for k, b := range batches {
		if b == nil || b.Targets == 0 {
			continue
		}
		err := func() error {
			// each rank draws its own dropout masks; one process draws
			// what it always drew
			seed := mix(t.cfg.Seed, int64(t.step), int64(k*t.world()+t.rank()))
			tensor.ManualSeed(seed)
			s := tensor.NewScope()
			defer s.Close()
			mb := lossBatch(s, b)
			if t.cfg.Checkpointing {
				mb.Checkpoint = models.NewCheckpoint(seed)
				defer mb.Checkpoint.Free()
			}
			out := t.model.ForwardT(s, mb)
			if err := s.Err(); err != nil {
				return err
			}
			if out.Loss == nil {
				return errors.New("the model returned no loss (labels missing?)")
			}
			w := float64(b.Targets) / float64(targets)
			l := s.Item(out.Loss)
			scaled := s.Keep(s.MulScalar(out.Loss, w))
			defer scaled.Free()
			// The autograd graph holds what backward needs, and a checkpoint
			// what its recomputation reads (the layers' inputs and side
			// tensors): releasing the scope's handles lets backward free
			// each activation once used, as PyTorch does (BENCHMARKS.md:
			// peak RSS of training steps on the benchmark config).
			s.FreeAll()
			mb.Checkpoint.Backward(s, scaled)
			if err := s.Err(); err != nil {
				return err
			}
			if math.IsNaN(l) || math.IsInf(l, 0) {
				return fmt.Errorf("loss is %v (lr %g)", l, lr)
			}
			sum += l * float64(b.Targets)
			tokens += b.Tokens
			return nil
		}()
		if err != nil {
			return 0, 0, err
		}
	}
	return sum, tokens, nil
}

// lossBatch is b for a forward pass whose loss is all the Trainer reads:
// it asks for the loss without the full logits (models.Batch.LossOnly),
// which causal LMs with a frozen head compute in chunks (models.CausalLMHead)
// and other models ignore.
func lossBatch(s *tensor.Scope, b *data.Batch) *models.Batch {
	mb := b.ModelBatch(s)
	mb.LossOnly = true
	return mb
}

// evaluate is Evaluate in eval mode (dropout off) during a run; in a
// data-parallel run each rank evaluates every world-th batch and the sums
// are all-reduced.
func (t *Trainer) evaluate(ds *data.Dataset) (float64, error) {
	if mod, ok := t.model.(nn.Module); ok {
		nn.SetTraining(mod, false)
		defer nn.SetTraining(mod, true)
	}
	if t.dist == nil {
		return Evaluate(t.model, ds, t.cfg.EvalBatchSize)
	}
	sum, n, local := evaluateShard(t.model, ds, t.cfg.EvalBatchSize, t.rank(), t.world())
	failed := 0.0
	if local != nil {
		failed = 1
	}
	got, err := t.dist.AllReduceFloat64s(dist.Sum, sum, float64(n), failed)
	switch {
	case local != nil:
		return 0, local
	case err != nil:
		return 0, fmt.Errorf("train: evaluate: %w", err)
	case got[2] > 0:
		return 0, errors.New("train: evaluate failed on another rank (see its error)")
	case got[1] == 0:
		return 0, errors.New("train: evaluate: no target tokens in the eval set")
	}
	return got[0] / got[1], nil
}

// Evaluate returns the token-weighted mean causal-LM loss of model on ds,
// in batches of batchSize, without gradients. Perplexity is its exp.
func Evaluate(model Model, ds *data.Dataset, batchSize int) (float64, error) {
	sum, n, err := evaluateShard(model, ds, batchSize, 0, 1)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, errors.New("train: evaluate: no target tokens in the eval set")
	}
	return sum / float64(n), nil
}

// progress prints one line: a bar, step, epoch, loss, lr, tokens/s, ETA.
func (t *Trainer) progress(r Record, elapsed float64, done int) {
	const width = 20
	filled := width * t.step / t.total
	bar := make([]byte, width)
	for i := range bar {
		switch {
		case i < filled:
			bar[i] = '='
		case i == filled:
			bar[i] = '>'
		default:
			bar[i] = ' '
		}
	}
	eta := time.Duration(0)
	if done > 0 {
		eta = time.Duration(elapsed / float64(done) * float64(t.total-t.step) * float64(time.Second)).Round(time.Second)
	}
	tps := 0.0
	if d := elapsed - t.logElapsed; d > 0 {
		tps = float64(t.logTokens) / d
	}
	t.logTokens, t.logElapsed = 0, elapsed
	fmt.Fprintf(t.out, "[%s] %d/%d  epoch %.2f  loss %.4f  lr %.3g  grad %.3g  %.0f tok/s  eta %s\n",
		bar, t.step, t.total, r.Epoch, *r.Loss, *r.LR, *r.GradNorm, tps, eta)
}

// mix derives a seed from a run seed and two counters (SplitMix64).
func mix(seed, a, b int64) int64 {
	z := uint64(seed) ^ uint64(a+1)*0x9E3779B97F4A7C15 ^ uint64(b+1)*0xC2B2AE3D27D4EB4F
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return int64((z ^ (z >> 31)) >> 1)
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
