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
	"os"

	"github.com/gopeft/peft/bitfit"
	"github.com/gopeft/peft/examples/internal/bertcls"
	"github.com/gopeft/peft/peft"
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

func run(dir string, epochs int, lr float64) error {
	base, err := bertcls.Load(dir)
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
	trainSet, testSet := bertcls.MakeTask(192, 1), bertcls.MakeTask(150, 2)
	acc, err := bertcls.Accuracy(m, testSet)
	if err != nil {
		return err
	}
	fmt.Printf("held-out accuracy before training: %.2f (chance 0.33)\n", acc)

	if err := bertcls.Train(m, trainSet, epochs, lr); err != nil {
		return err
	}
	if acc, err = bertcls.Accuracy(m, testSet); err != nil {
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
	fresh, err := bertcls.Load(dir)
	if err != nil {
		return err
	}
	loaded, err := peft.Load(fresh, out)
	if err != nil {
		return err
	}
	if acc, err = bertcls.Accuracy(loaded, testSet); err != nil {
		return err
	}
	fmt.Printf("biases saved to %s and loaded back: accuracy %.2f\n", out, acc)
	return nil
}
