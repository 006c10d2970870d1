package charts_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/gopeft/peft/charts"
)

// Before/after accuracy per method as grouped bars, as the quickstart
// draws them for -method all.
func ExampleAccuracy() {
	dir, err := os.MkdirTemp("", "charts")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	files, err := charts.Accuracy([]charts.BeforeAfter{
		{Label: "LoRA", Before: 0, After: 0.95},
		{Label: "IA3", Before: 0, After: 0.40},
	}, "held-out exact match", filepath.Join(dir, "accuracy"))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range files {
		fmt.Println(filepath.Base(f))
	}
	// Output:
	// accuracy.svg
	// accuracy.png
}
