package bert_test

import (
	"fmt"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/models/bert"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
)

// Load a HF BertForSequenceClassification folder and classify a batch,
// with a loss for the labels.
func ExampleLoad() {
	m, err := bert.Load("../../testdata/hf/bert-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	cls := m.(*bert.ForSequenceClassification)
	defer cls.Free()
	s := tensor.NoGradScope() // owns the inputs and the outputs
	defer s.Close()
	ids := s.FromInt64([]int64{1, 306, 450, 263, 1, 123, 29, 0}, 2, 4)
	mask := s.FromInt64([]int64{1, 1, 1, 1, 1, 1, 1, 0}, 2, 4)
	labels := s.FromInt64([]int64{2, 0}, 2)
	out, err := cls.Forward(s, models.Inputs{InputIDs: ids, AttentionMask: mask, Labels: labels})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(nn.TypeName(cls), cls.Bert.Config.Labels())
	fmt.Println("logits", out.Logits.Shape())
	fmt.Printf("loss %.2f\n", s.Item(out.Loss))
	// Output:
	// BertForSequenceClassification [LABEL_0 LABEL_1 LABEL_2]
	// logits [2 3]
	// loss 1.10
}

// Fine-tune a classifier with LoRA, as PEFT's task type SEQ_CLS does: LoRA
// on query and value, and the classifier head trained in full (and saved
// with the adapter).
func ExampleLoadForSequenceClassification() {
	base, err := bert.LoadForSequenceClassification("../../testdata/hf/bert-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	model, err := lora.Wrap(base, &lora.Config{R: 8, LoraAlpha: 16, TargetModules: lora.List("query", "value"), Task: peft.SeqCls})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nn.FreeParams(model)
	fmt.Println(nn.TypeName(model))
	model.PrintTrainableParameters()
	// Output:
	// PeftModelForSequenceClassification
	// trainable params: 4,291 || all params: 116,806 || trainable%: 3.6736
}
