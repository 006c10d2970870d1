// Command bert-bitfit fine-tunes a BERT sequence classifier with BitFit,
// the setting of Ben Zaken et al. (2022): every bias term of the encoder
// and the classifier head train, all other weights stay frozen (task
// SEQ_CLS). On a small synthetic 3-class task it prints the trainable
// share, held-out accuracy before and after, and the accuracy with the
// saved biases loaded back into a fresh model.
//
//	go run ./examples/bert-bitfit [-model DIR] [-epochs 8] [-lr 0.01]
//
// With -model, a HF BERT folder (bert-base-uncased, a fine-tuned
// BertForSequenceClassification, …) is loaded with a new 3-label head
// when it has none; its vocabulary must have more than 500 ids. Without
// it, a randomly initialised bert-tiny-sized model stands in for a
// pretrained one.
package main

import (
	"flag"
	"fmt"
	"math/rand"
	"os"

	"github.com/gopeft/peft/bitfit"
	"github.com/gopeft/peft/internal/tensor"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bert"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/train"
)

func main() {
	model := flag.String("model", "", "HF BERT folder (default: a random bert-tiny-sized stand-in)")
	epochs := flag.Int("epochs", 8, "passes over the 192 training examples")
	lr := flag.Float64("lr", 0.01, "AdamW learning rate")
	flag.Parse()
	if err := run(*model, *epochs, *lr); err != nil {
		fmt.Fprintln(os.Stderr, "bert-bitfit:", err)
		os.Exit(1)
	}
}

// load reads dir as a 3-label classifier, or makes the stand-in.
func load(dir string) (*bert.ForSequenceClassification, error) {
	if dir != "" {
		return bert.LoadForSequenceClassification(dir, bert.HeadOptions{NumLabels: 3, Seed: 1})
	}
	cfg := &bert.Config{VocabSize: 512, HiddenSize: 64, NumHiddenLayers: 2, NumAttentionHeads: 4, IntermediateSize: 128,
		MaxPositionEmbeddings: 128, NumLabels: 3, InitializerRange: 0.125}
	return bert.NewForSequenceClassification(cfg, 11)
}

// task is the synthetic data: a [CLS]-like id 1, then 5–11 tokens, each
// with probability 1/2 one of the class's 8 keyword ids (20+8c…) and
// otherwise a filler id from [100, 500); right padding to 12.
type task struct{ ids, mask, labels []int64 }

const seqLen = 12

func makeTask(n int, seed int64) *task {
	r := rand.New(rand.NewSource(seed))
	t := &task{}
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

func (t *task) batch(s *tensor.Scope, from, to int, labels bool) *models.Batch {
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

type forwarder interface {
	ForwardT(*tensor.Scope, *models.Batch) *models.Output
}

func accuracy(m forwarder, t *task) (float64, error) {
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

func run(dir string, epochs int, lr float64) error {
	base, err := load(dir)
	if err != nil {
		return err
	}
	m, err := bitfit.Wrap(base, &bitfit.Config{Task: peft.SeqCls}) // every bias, plus the classifier
	cfg := base.Bert.Config
	fmt.Printf("encoder biases %d + classifier %d\n", cfg.NumBiasParams(true), cfg.NumLabels*(cfg.HiddenSize+1))
	if err != nil {
		return err
	}
	m.PrintTrainableParameters()
	trainSet, testSet := makeTask(192, 1), makeTask(150, 2)
	acc, err := accuracy(m, testSet)
	if err != nil {
		return err
	}
	fmt.Printf("held-out accuracy before training: %.2f (chance 0.33)\n", acc)

	opt := train.NewAdamW(m.TrainableParams(), train.AdamWConfig{LR: lr})
	defer opt.Free()
	for e := 0; e < epochs; e++ {
		var sum float64
		steps := 0
		for from := 0; from < len(trainSet.labels); from += 32 {
			s := tensor.NewScope()
			out := m.ForwardT(s, trainSet.batch(s, from, from+32, true))
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
	if acc, err = accuracy(m, testSet); err != nil {
		return err
	}
	fmt.Printf("held-out accuracy after training: %.2f\n", acc)

	out, err := os.MkdirTemp("", "bert-bitfit")
	if err != nil {
		return err
	}
	defer os.RemoveAll(out)
	if err := m.Save(out); err != nil { // the biases and the classifier, under their HF names
		return err
	}
	fresh, err := load(dir)
	if err != nil {
		return err
	}
	loaded, err := peft.Load(fresh, out)
	if err != nil {
		return err
	}
	if acc, err = accuracy(loaded, testSet); err != nil {
		return err
	}
	fmt.Printf("biases saved to %s and loaded back: accuracy %.2f\n", out, acc)
	return nil
}
