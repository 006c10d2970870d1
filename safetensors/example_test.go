package safetensors_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/gopeft/peft/safetensors"
)

func ExampleWrite() {
	dir, err := os.MkdirTemp("", "safetensors-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "adapter_model.safetensors")

	err = safetensors.Write(path, []safetensors.Tensor{
		{Name: "lora_B", DType: safetensors.F32, Shape: []int64{4, 2}, Data: safetensors.Float32Bytes(make([]float32, 8))},
		{Name: "lora_A", DType: safetensors.F32, Shape: []int64{2, 3}, Data: safetensors.Float32Bytes([]float32{1, 2, 3, 4, 5, 6})},
		{Name: "step", DType: safetensors.I64, Shape: []int64{}, Data: safetensors.Int64Bytes([]int64{100})},
	}, map[string]string{"format": "pt"})
	if err != nil {
		panic(err)
	}

	f, err := safetensors.Open(path)
	if err != nil {
		panic(err)
	}
	defer f.Close()
	for _, name := range f.Names() {
		info, _ := f.Info(name)
		fmt.Println(name, info.DType, info.Shape)
	}
	a, _ := f.Data("lora_A")
	fmt.Println(safetensors.Float32s(a), f.Metadata()["format"])
	// Output:
	// lora_A F32 [2 3]
	// lora_B F32 [4 2]
	// step I64 []
	// [1 2 3 4 5 6] pt
}
