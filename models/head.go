package models

import (
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// LossChunkBytes bounds the float32 buffers of one chunk of the fused loss
// head (see CausalLMHead): a chunk has max(16, LossChunkBytes / (8·vocab))
// positions (a [rows, vocab] float32 copy of the logits and their
// log-softmax live together): 110 rows at Qwen2.5's 151936 tokens of
// vocabulary, 130 at Llama 3's 128256, 524 at Llama 2's 32000. Each chunk
// reads the head's weight twice (its logits, its gradient), so smaller
// chunks cost time: on Qwen2.5-0.5B at 512 positions (BENCHMARKS.md) the
// head takes no longer than the plain one from 128 MiB up, up to 15%
// longer at 64 MiB, about twice as long at 16 rows. Tests lower it to cover
// several chunks.
var LossChunkBytes int64 = 128 << 20

// CausalLMHead is a causal LM's head on its final hidden states x [B, L,
// hidden] (after the final norm): logits = head(x) in float32, as HF's
// logits.float(), and, when b has labels, ShiftedLoss.
//
// With b.LossOnly and labels, when the head is a plain Linear with nothing
// trainable (no gradient on its weight or bias: LoRA and the other
// methods on a frozen base, unless they target lm_head or save it with
// modules_to_save), the loss is computed without the full logits: logits
// is nil, and loss equals ShiftedLoss's within float32 rounding (Liger's
// fused linear cross-entropy). For each chunk of the shifted positions
// whose label is not -100 the head computes the chunk's logits in the
// weight's dtype, casts them to float32, takes their log-softmax and adds
// the chunk's cross-entropy to the sum; when autograd is on and x carries
// a graph it also computes the gradient at the chunk's hidden states,
// (softmax − one-hot)/N @ W — cast to the weight's dtype before the
// product, as autograd's backward of logits.float() does — and frees the
// chunk's buffers. The gradient reaches autograd through a surrogate: the
// returned loss is mean + (S − S.detach()) with S = Σ x·G.detach() in
// float32, whose value is the mean and whose gradient at x is G, so
// Backward (and Checkpoint.Backward) continues through the final norm and
// the layers as usual. Peak memory holds one chunk's logits instead of
// the bf16 logits, their float32 copy and log-softmax over every position
// in the forward pass and the same again in backward. A head that trains,
// a batch whose targets are all -100, or a sequence of one token take the
// plain path (logits returned).
func CausalLMHead(s *tensor.Scope, b *Batch, x *tensor.T, head nn.Layer) (logits, loss *tensor.T) {
	if b.LossOnly && b.Labels != nil {
		if lin, ok := head.(*nn.Linear); ok && frozen(lin) {
			if loss, ok := fusedLoss(s, x, b.Labels, lin); ok {
				return nil, loss
			}
		}
	}
	logits = head.Forward(s, HeadInput(s, b, x))
	if logits != nil && logits.DType() != tensor.Float32 {
		logits = s.To(logits, tensor.Float32)
	}
	if b.Labels != nil {
		loss = ShiftedLoss(s, logits, b.Labels)
	}
	return logits, loss
}

// frozen reports whether nothing of l trains.
func frozen(l *nn.Linear) bool {
	return !l.Weight.RequiresGrad() && (l.Bias == nil || !l.Bias.RequiresGrad())
}

// fusedLoss is CausalLMHead's chunked loss; false when it does not apply
// (the caller takes the plain path, which also reports malformed labels).
func fusedLoss(s *tensor.Scope, x, labels *tensor.T, head *nn.Linear) (*tensor.T, bool) {
	if s.Err() != nil || x == nil || x.Dim() != 3 {
		return nil, false
	}
	w := head.Weight.T()
	var bias *tensor.T
	if head.Bias != nil {
		bias = head.Bias.T()
	}
	B, L, H := x.Size(0), x.Size(1), x.Size(2)
	if ls := labels.Shape(); len(ls) != 2 || ls[0] != B || ls[1] != L || L < 2 ||
		w.Dim() != 2 || w.Size(1) != H || x.DType() != w.DType() {
		return nil, false
	}
	V, dt := w.Size(0), w.DType()
	// the shifted targets labels[:, 1:] of rows x[:, :-1], flattened; only
	// rows with a target enter the head
	lab := s.Int64s(labels)
	if s.Err() != nil {
		return nil, false
	}
	var rows, targets []int64
	for i := int64(0); i < B; i++ {
		for j := int64(0); j < L-1; j++ {
			if t := lab[i*L+j+1]; t != IgnoreIndex {
				rows = append(rows, i*(L-1)+j)
				targets = append(targets, t)
			}
		}
	}
	n := int64(len(rows))
	if n == 0 {
		return nil, false // HF's mean over no target is NaN: the plain path gives it
	}
	xs := s.Reshape(s.Narrow(x, 1, 0, L-1), -1, H) // [B(L-1), H], with x's graph
	if n < B*(L-1) {
		xs = s.IndexSelect(xs, 0, s.FromInt64(rows, n))
	}
	tg := s.FromInt64(targets, n, 1)
	grad := tensor.GradEnabled() && xs.RequiresGrad()

	chunk := max(16, LossChunkBytes/(8*V))
	xd := s.Detach(xs)
	prev := tensor.SetGradEnabled(false)
	var sum *tensor.T
	var gs []*tensor.T
	for r := int64(0); r < n && s.Err() == nil; r += chunk {
		c := min(chunk, n-r)
		mark := s.Mark()
		xc := s.Narrow(xd, 0, r, c)
		// at::linear's ops on a 2-D input, never the few-rows kernels
		var lg *tensor.T
		if bias != nil {
			lg = s.Addmm(bias, xc, s.Transpose(w, 0, 1))
		} else {
			lg = s.Matmul(xc, s.Transpose(w, 0, 1))
		}
		if dt != tensor.Float32 {
			lg32 := s.To(lg, tensor.Float32)
			s.Drop(lg)
			lg = lg32
		}
		logp := s.LogSoftmax(lg, -1, tensor.Float32)
		s.Drop(lg)
		tc := s.Narrow(tg, 0, r, c)
		part := s.Sum(s.Gather(logp, 1, tc), false)
		if sum == nil {
			sum = part
		} else {
			sum = s.Add(sum, part)
		}
		var g *tensor.T
		if grad {
			s.Exp_(logp) // softmax
			s.ScatterAdd_(logp, 1, tc, s.Full(tensor.Float32, -1, c, 1))
			s.MulScalar_(logp, 1/float64(n))
			d := logp
			if dt != tensor.Float32 {
				d = s.To(logp, dt)
				s.Drop(logp)
			}
			g = s.Matmul(d, w) // [c, H]
			gs = append(gs, g)
		}
		s.FreeSince(mark, sum, g)
	}
	mean := s.DivScalar(s.Neg(sum), float64(n))
	tensor.SetGradEnabled(prev)
	if s.Err() != nil {
		return nil, false
	}
	if !grad {
		return mean, true
	}
	g := gs[0]
	if len(gs) > 1 {
		g = s.Cat(0, gs...)
	}
	xf := xs
	if dt != tensor.Float32 {
		xf, g = s.To(xs, tensor.Float32), s.To(g, tensor.Float32)
	}
	sur := s.Sum(s.Mul(xf, g), false)
	return s.Add(mean, s.Sub(sur, s.Detach(sur))), s.Err() == nil
}
