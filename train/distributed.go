package train

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/gopeft/peft/data"
	"github.com/gopeft/peft/dist"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// Data-parallel training (see Config.Dist). Every rank holds the whole
// model and the whole dataset and draws the same epoch order; a global
// micro-batch is BatchSize × WorldSize consecutive samples of that order,
// and rank r takes its samples r, r+W, r+2W, … (torch's DistributedSampler
// without padding: every sample once per epoch, the last micro-batch may
// leave a rank with fewer or none). A step's samples are therefore those of
// a single process with BatchSize × WorldSize. Each rank weights its
// micro-batches' losses by their share of the global step's target tokens
// (every rank knows them: the order is shared), so the all-reduced sum of
// the ranks' gradients is the single process's token-weighted gradient.

// group is the process group the run uses: Config.Dist, else the one the
// environment describes (nil: a single process).
func (t *Trainer) group() (*dist.Group, error) {
	if t.cfg.Dist != nil {
		return t.cfg.Dist, nil
	}
	dev := tensor.CPU
	if len(t.params) > 0 {
		dev = t.params[0].Param.T().Device()
	}
	g, err := dist.Default(dist.Options{Device: dev})
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	return g, nil
}

// rank and world of the run (0 and 1 without a group).
func (t *Trainer) rank() int {
	if t.dist == nil {
		return 0
	}
	return t.dist.Rank()
}

func (t *Trainer) world() int {
	if t.dist == nil {
		return 1
	}
	return t.dist.WorldSize()
}

// shard is rank's part of a global micro-batch: positions rank, rank+world, …
func shard(global []int, rank, world int) []int {
	var out []int
	for i := rank; i < len(global); i += world {
		out = append(out, global[i])
	}
	return out
}

// checkSameRun fails unless every rank trains the same run: dataset size
// and tokens, batch shape, seed, steps. A rank with other data would
// silently train on a different global batch.
func (t *Trainer) checkSameRun(ds *data.Dataset) error {
	shuffle := 0.0
	if !t.cfg.NoShuffle {
		shuffle = 1
	}
	vals := []float64{float64(ds.Len()), float64(ds.Tokens()), float64(t.cfg.BatchSize), float64(t.cfg.GradAccum),
		float64(t.cfg.Seed), float64(t.total), shuffle, float64(len(t.params)), float64(t.step)}
	names := []string{"training samples", "training tokens", "batch size", "gradient accumulation", "seed",
		"steps", "shuffle", "trainable tensors", "resumed step"}
	hi, err := t.dist.AllReduceFloat64s(dist.Max, vals...)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	lo, err := t.dist.AllReduceFloat64s(dist.Min, vals...)
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	var diff []string
	for i := range vals {
		if hi[i] != lo[i] {
			diff = append(diff, fmt.Sprintf("%s (this rank %v, others between %v and %v)", names[i], vals[i], lo[i], hi[i]))
		}
	}
	if len(diff) > 0 {
		return fmt.Errorf("train: rank %d of %d: the ranks disagree on %s", t.rank(), t.world(), strings.Join(diff, ", "))
	}
	return nil
}

// broadcastParams gives every rank rank 0's trainable parameters.
func (t *Trainer) broadcastParams() error {
	if err := t.dist.Broadcast(0, paramTensors(t.params)...); err != nil {
		return fmt.Errorf("train: broadcast parameters from rank 0: %w", err)
	}
	return nil
}

// agree is a collective on whether every rank succeeded at the same
// point: it returns the local error, or an error naming the ranks that
// failed, on every rank alike (so none waits on a rank that gave up).
func (t *Trainer) agree(what string, local error) error {
	if t.dist == nil {
		return local
	}
	flags := make([]float64, t.world())
	if local != nil {
		flags[t.rank()] = 1
	}
	got, err := t.dist.AllReduceFloat64s(dist.Sum, flags...)
	if err != nil {
		if local != nil {
			return local
		}
		return fmt.Errorf("train: %s: %w", what, err)
	}
	if local != nil {
		return local
	}
	var failed []string
	for r, f := range got {
		if f != 0 {
			failed = append(failed, fmt.Sprint(r))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("train: %s failed on rank %s (see its error)", what, strings.Join(failed, ", "))
	}
	return nil
}

// reduceStep combines the ranks' step results: it returns the global
// token-weighted loss and the tokens, and which parameters have a gradient
// on some rank; or an error on every rank when one failed (its own error
// on the failing rank).
func (t *Trainer) reduceStep(sum float64, tokens, targets int, local error) (float64, int, []bool, error) {
	if t.dist == nil {
		if local != nil {
			return 0, 0, nil, local
		}
		return sum / float64(targets), tokens, nil, nil
	}
	vals := make([]float64, 3+len(t.params))
	if local != nil {
		vals[2] = 1
	} else {
		vals[0], vals[1] = sum, float64(tokens)
		has, err := hasGrads(t.params)
		if err != nil {
			vals[2], local = 1, err
		}
		for i, h := range has {
			if h {
				vals[3+i] = 1
			}
		}
	}
	got, err := t.dist.AllReduceFloat64s(dist.Sum, vals...)
	switch {
	case local != nil:
		return 0, 0, nil, local
	case err != nil:
		return 0, 0, nil, err
	case got[2] > 0:
		return 0, 0, nil, fmt.Errorf("another rank failed (%v of %d; see its error)", got[2], t.world())
	}
	loss := got[0] / float64(targets)
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return 0, 0, nil, fmt.Errorf("loss is %v", loss)
	}
	some := make([]bool, len(t.params))
	for i := range some {
		some[i] = got[3+i] > 0
	}
	return loss, int(got[1]), some, nil
}

// hasGrads reports which parameters have a gradient.
func hasGrads(params []nn.NamedParam) ([]bool, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	out := make([]bool, len(params))
	for i, np := range params {
		out[i] = s.Grad(np.Param.T()) != nil
		s.FreeAll()
	}
	return out, s.Err()
}

// reduceGrads sums the ranks' gradients of the trainable parameters that
// have one on some rank (bucketed; each rank's are already weighted by its
// share of the step's targets). A parameter without a gradient anywhere
// keeps none, as in one process (AdamW skips it).
func (t *Trainer) reduceGrads(some []bool) error {
	if t.dist == nil {
		return nil
	}
	var ts []*tensor.T
	for i, np := range t.params {
		if some[i] {
			ts = append(ts, np.Param.T())
		}
	}
	return t.dist.AllReduceGrads(dist.Sum, 0, ts...)
}

// evaluateShard is the token-weighted loss sum and target count of the
// eval batches i ≡ rank (mod world), each batch as Evaluate makes it.
func evaluateShard(model Model, ds *data.Dataset, batchSize, rank, world int) (float64, int, error) {
	if batchSize <= 0 {
		batchSize = 8
	}
	col := data.Collator{PadID: ds.PadID}
	var sum float64
	n := 0
	for i, lo := 0, 0; lo < ds.Len(); i, lo = i+1, lo+batchSize {
		if i%world != rank {
			continue
		}
		b := col.Collate(ds.Samples[lo:min(lo+batchSize, ds.Len())])
		if b.Targets == 0 {
			continue
		}
		err := func() error {
			s := tensor.NoGradScope()
			defer s.Close()
			out := model.ForwardT(s, lossBatch(s, b))
			if err := s.Err(); err != nil {
				return err
			}
			if out.Loss == nil {
				return errors.New("the model returned no loss")
			}
			sum += s.Item(out.Loss) * float64(b.Targets)
			n += b.Targets
			return s.Err()
		}()
		if err != nil {
			return 0, 0, fmt.Errorf("train: evaluate: %w", err)
		}
	}
	return sum, n, nil
}

// paramTensors are the trainable parameters' tensors.
func paramTensors(params []nn.NamedParam) []*tensor.T {
	ts := make([]*tensor.T, len(params))
	for i, np := range params {
		ts[i] = np.Param.T()
	}
	return ts
}
