// Package bertcls is the task the BERT examples share: a small synthetic
// 3-class sequence-classification set, a model to tune on it (a HF folder
// or a random bert-tiny-sized stand-in), accuracy and a training loop.
package bertcls

import (
	"fmt"
	"math/rand"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bert"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
	"github.com/gopeft/peft/train"
)

// Load reads dir as a 3-label classifier, or makes the stand-in.
func Load(dir string) (*bert.ForSequenceClassification, error) {
	if dir != "" {
		return bert.LoadForSequenceClassification(dir, bert.HeadOptions{NumLabels: 3, Seed: 1})
	}
	cfg := &bert.Config{VocabSize: 512, HiddenSize: 64, NumHiddenLayers: 2, NumAttentionHeads: 4, IntermediateSize: 128,
		MaxPositionEmbeddings: 128, NumLabels: 3, InitializerRange: 0.125}
	return bert.NewForSequenceClassification(cfg, 11)
}

// Task is the synthetic data: a [CLS]-like id 1, then 5–11 tokens, each
// with probability 1/2 one of the class's 8 keyword ids (20+8c…) and
// otherwise a filler id from [100, 500); right padding to 12.
type Task struct{ ids, mask, labels []int64 }

const seqLen = 12

// MakeTask draws n examples with seed.
func MakeTask(n int, seed int64) *Task {
	r := rand.New(rand.NewSource(seed))
	t := &Task{}
	for i := 0; i < n; i++ {
		c := int64(r.Intn(3))
		length := 6 + r.Intn(seqLen-5)
		for p := 0; p < seqLen; p++ {
			id, m := int64(0), int64(1)
			switch {
			case p == 0:
				id = 1
			case p < length && r.Intn(2) == 0:
				id = 20 + 8*c + int64(r.Intn(8))
			case p < length:
				id = 100 + int64(r.Intn(400))
			default:
				m = 0
			}
			t.ids, t.mask = append(t.ids, id), append(t.mask, m)
		}
		t.labels = append(t.labels, c)
	}
	return t
}

func (t *Task) batch(s *tensor.Scope, from, to int, labels bool) *models.Batch {
	n := int64(to - from)
	b := &models.Batch{
		InputIDs:      s.FromInt64(t.ids[from*seqLen:to*seqLen], n, seqLen),
		AttentionMask: s.FromInt64(t.mask[from*seqLen:to*seqLen], n, seqLen),
	}
	if labels {
		b.Labels = s.FromInt64(t.labels[from:to], n)
	}
	return b
}

// Forwarder is any model of the library.
type Forwarder interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}

// Accuracy is the share of t classified right by m (no grad).
func Accuracy(m Forwarder, t *Task) (float64, error) {
	s := tensor.NoGradScope()
	defer s.Close()
	out := m.ForwardT(s, t.batch(s, 0, len(t.labels), false))
	pred := s.Int64s(s.Argmax(out.Logits, 1))
	if err := s.Err(); err != nil {
		return 0, err
	}
	right := 0
	for i, p := range pred {
		if p == t.labels[i] {
			right++
		}
	}
	return float64(right) / float64(len(pred)), nil
}

// Train runs epochs of AdamW (lr) over t in batches of 32 on the trainable
// parameters of m, printing each epoch's mean loss.
func Train(m interface {
	Forwarder
	TrainableParams() []nn.NamedParam
}, t *Task, epochs int, lr float64) error {
	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: lr})
	defer opt.Free()
	for e := 0; e < epochs; e++ {
		var sum float64
		steps := 0
		for from := 0; from < len(t.labels); from += 32 {
			s := tensor.NewScope()
			out := m.ForwardT(s, t.batch(s, from, from+32, true))
			s.Backward(out.Loss)
			sum += s.Item(out.Loss)
			err := s.Err()
			s.Close()
			if err != nil {
				return err
			}
			if err := opt.Step(); err != nil {
				return err
			}
			if err := opt.ZeroGrad(); err != nil {
				return err
			}
			steps++
		}
		fmt.Printf("epoch %d: mean loss %.4f\n", e+1, sum/float64(steps))
	}
	return nil
}
