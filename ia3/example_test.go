package ia3_test

import (
	"fmt"
	"os"

	"github.com/gopeft/peft/ia3"
	"github.com/gopeft/peft/models/bloom"
	"github.com/gopeft/peft/peft"
)

// Wrap a BLOOM checkpoint with IA3 (PEFT's defaults for bloom), save the
// adapter in PEFT's format, load it back, and rank two answers with
// length normalization.
func ExampleWrap() {
	base, err := bloom.Load("../testdata/hf/bloom-tiny")
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg := &ia3.Config{}
	model, err := ia3.Wrap(base, cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	model.PrintTrainableParameters()
	fmt.Println(cfg.TargetModules.List, "feed-forward:", cfg.FeedforwardModules.List)

	dir, _ := os.MkdirTemp("", "ia3")
	defer os.RemoveAll(dir)
	if err := model.Save(dir); err != nil {
		fmt.Println(err)
		return
	}
	fresh, _ := bloom.Load("../testdata/hf/bloom-tiny")
	loaded, err := peft.Load(fresh, dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	pred, _, err := ia3.RankClassify(loaded, []ia3.MultipleChoice{
		{Input: []int64{5, 17, 33}, Choices: [][]int64{{100}, {200, 201}}},
	}, 3)
	fmt.Println("answer index:", pred[0], err)
	// Output:
	// trainable params: 896 || all params: 133,888 || trainable%: 0.6692
	// [query_key_value mlp.dense_4h_to_h] feed-forward: [mlp.dense_4h_to_h]
	// answer index: 0 <nil>
}
