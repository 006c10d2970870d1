package models

import (
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// LayerFunc runs one decoder layer on its input x inside scope s.
type LayerFunc func(s *tensor.Scope, x *tensor.T) *tensor.T

// Checkpoint is activation checkpointing for one forward and backward pass
// (PyTorch's torch.utils.checkpoint, HF's gradient_checkpointing_enable),
// per decoder layer. Set it on Batch.Checkpoint and call its Backward
// instead of the scope's:
//
//	ck := models.NewCheckpoint(seed)
//	defer ck.Free()
//	out := model.ForwardT(s, &models.Batch{..., Checkpoint: ck})
//	ck.Backward(s, out.Loss)
//
// In the forward pass each layer runs with autograd off, and only its input
// is kept: peak memory holds one hidden state [B, L, hidden] per layer
// instead of every layer's saved activations. The last layer's output
// becomes a leaf that requires grad, so the head (final norm, lm_head,
// loss) builds its graph as usual. Backward then walks the layers from the
// last to the first: it recomputes layer i with autograd on from its
// stored input (a fresh leaf), back-propagates the gradient that arrived at
// the layer's output (a backward pass of sum(output · grad)), which
// accumulates the layer's parameter gradients and yields the gradient at
// its input for layer i−1. The first layer's input, when it carries a
// graph (trainable embeddings, prompt tuning's virtual tokens), receives
// the last gradient. Layers below the lowest one with something trainable
// (its parameters, or side inputs such as prefix key/values) are not
// recomputed.
//
// Randomness: before a layer runs (in the forward pass and again in its
// recomputation) libtorch's generator is seeded from the checkpoint's seed
// and the layer's index, so dropout draws the same masks both times. The
// masks therefore differ from an un-checkpointed run with the same global
// seed; without dropout the two give the same gradients (within float
// rounding).
//
// What the layers read besides their input — the rotary tables, the
// attention mask, ALiBi biases, prefix key/values — is passed to Layer as
// side tensors, and the checkpoint holds them until Free: the ones the
// forward's scope owns move out of it (Scope.Keep). Nothing the
// recomputation reads then belongs to the scope, so the caller may free
// the whole forward scope before Backward (train.Trainer does, keeping
// only the loss): the head's graph keeps what its backward needs, the
// checkpoint the rest.
//
// A nil *Checkpoint means no checkpointing: Layer just runs the layer and
// Backward is the scope's Backward. Checkpointing is for training; models
// ignore it when the batch asks for a KV cache.
type Checkpoint struct {
	seed   int64
	layers []ckptLayer
	input  *tensor.T // the first layer's input as given (with its graph, if any)
	output *tensor.T // the last layer's output: a leaf that requires grad
	held   []*tensor.T
}

type ckptLayer struct {
	x         *tensor.T // the layer's input, detached
	fn        LayerFunc
	needsGrad bool // parameters or side inputs require grad
}

// NewCheckpoint starts a checkpointed pass whose layers' randomness derives
// from seed.
func NewCheckpoint(seed int64) *Checkpoint { return &Checkpoint{seed: seed} }

// Layer runs fn (one decoder layer, whose module is layer) on x. Without
// checkpointing (c == nil) that is all; with it, see Checkpoint. side lists
// every other tensor fn reads (rotary cos/sin, masks, prefix keys and
// values; nil entries are skipped): the checkpoint holds those that s
// owns until Free, so that Backward's recomputation finds them after the
// forward's scope is freed (tensors s does not own stay their owner's,
// who keeps them through Backward). A side tensor that requires grad
// (prefix key/values) makes the layer one to recompute.
func (c *Checkpoint) Layer(s *tensor.Scope, layer nn.Module, x *tensor.T, fn LayerFunc, side ...*tensor.T) *tensor.T {
	if c == nil {
		return fn(s, x)
	}
	if s.Err() != nil || x == nil {
		return nil
	}
	for _, t := range side {
		c.hold(s, t)
	}
	i := len(c.layers)
	if i == 0 {
		c.input = x.Clone()
	}
	needs := false
	for _, np := range nn.NamedParams(layer) {
		if np.Param.RequiresGrad() {
			needs = true
			break
		}
	}
	for _, t := range side {
		if t.RequiresGrad() {
			needs = true
		}
	}
	stored := s.Keep(s.Detach(x))
	prev := tensor.SetGradEnabled(false)
	tensor.ManualSeed(c.layerSeed(i))
	y := fn(s, x)
	tensor.SetGradEnabled(prev)
	if s.Err() != nil {
		stored.Free()
		return nil
	}
	c.layers = append(c.layers, ckptLayer{x: stored, fn: fn, needsGrad: needs})
	s.SetRequiresGrad(y, true)
	c.output.Free()
	c.output = y.Clone()
	return y
}

// hold takes t out of s, to free it at Free (nothing when s does not own
// t, or the checkpoint holds it already).
func (c *Checkpoint) hold(s *tensor.Scope, t *tensor.T) {
	if t == nil || !s.Owns(t) {
		return
	}
	c.held = append(c.held, s.Keep(t))
}

// layerSeed mixes the checkpoint's seed with a layer index (SplitMix64).
func (c *Checkpoint) layerSeed(i int) int64 {
	z := uint64(c.seed) + uint64(i+1)*0x9E3779B97F4A7C15
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
	z = (z ^ (z >> 27)) * 0x94D049BB133111EB
	return int64((z ^ (z >> 31)) >> 1)
}

// Backward back-propagates loss through the head and then, layer by layer
// with recomputation, through the decoder (see Checkpoint). Without
// checkpointing it is s.Backward(loss). Errors land in s. The stored
// inputs are released as their layers are done.
func (c *Checkpoint) Backward(s *tensor.Scope, loss *tensor.T) {
	if c == nil || len(c.layers) == 0 {
		s.Backward(loss)
		return
	}
	prev := tensor.SetGradEnabled(true)
	defer tensor.SetGradEnabled(prev)
	s.Backward(loss)
	if s.Err() != nil {
		return
	}
	lowest := -1
	if c.input.RequiresGrad() {
		lowest = 0
	} else {
		for i, l := range c.layers {
			if l.needsGrad {
				lowest = i
				break
			}
		}
	}
	if lowest < 0 {
		return // nothing in or below the decoder trains
	}
	g := s.Grad(c.output)
	if g == nil {
		return
	}
	for i := len(c.layers) - 1; i >= lowest && s.Err() == nil; i-- {
		l := &c.layers[i]
		mark := s.Mark()
		xin := s.Detach(l.x)
		s.SetRequiresGrad(xin, true)
		tensor.ManualSeed(c.layerSeed(i))
		y := l.fn(s, xin)
		// keep_graph: side inputs (prefix key/values) share one graph
		// that every layer's pass goes through
		s.BackwardKeep(s.Sum(s.Mul(y, g), false))
		gi := s.Grad(xin)
		s.FreeSince(mark, gi)
		s.Drop(g)
		g = gi
		l.x.Free()
		l.x = nil
		if g == nil {
			return
		}
	}
	if lowest == 0 && c.input.RequiresGrad() && s.Err() == nil {
		s.BackwardKeep(s.Sum(s.Mul(c.input, g), false))
	}
	s.Drop(g)
}

// Free releases what the checkpoint still holds (after Backward, two
// handles and the side tensors; after a forward pass without Backward,
// also the stored inputs).
func (c *Checkpoint) Free() {
	if c == nil {
		return
	}
	for _, t := range c.held {
		t.Free()
	}
	c.held = nil
	for i := range c.layers {
		c.layers[i].x.Free()
	}
	c.layers = nil
	c.input.Free()
	c.output.Free()
	c.input, c.output = nil, nil
}

// Len is the number of layers run under the checkpoint so far.
func (c *Checkpoint) Len() int {
	if c == nil {
		return 0
	}
	return len(c.layers)
}

// Tensors lists the keys and values of kv (none for nil), for
// Checkpoint.Layer's side inputs.
func (kv *KV) Tensors() []*tensor.T {
	if kv == nil {
		return nil
	}
	return []*tensor.T{kv.K, kv.V}
}
