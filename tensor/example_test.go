package tensor_test

import (
	"fmt"

	"github.com/gopeft/peft/tensor"
	"github.com/sugarme/gotch/ts"
)

// Compute in a scope: it owns every result and frees them at Close; one
// error check covers the block.
func ExampleScope() {
	s := tensor.NoGradScope()
	defer s.Close()
	x := s.FromFloat32([]float32{1, 2, 3, 4, 5, 6}, 2, 3)
	w := s.FromFloat32([]float32{1, 0, 1, 0, 1, 0}, 2, 3) // [out 2, in 3]
	y := s.Relu(s.AddScalar(s.Linear(x, w, nil), -5))     // relu(x·wᵀ - 5): [2, 2]
	if err := s.Err(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(y.Shape(), s.Float32s(y))

	// After a failed op every later op is a no-op and Err reports the first.
	bad := s.Matmul(x, x) // [2, 3] @ [2, 3]
	fmt.Println(bad == nil, s.Add(bad, x) == nil, s.Err() != nil)
	// Output:
	// [2 2] [0 0 5 0]
	// true true true
}

// Keep takes a result out of its scope: it outlives Close, and its new
// owner frees it.
func ExampleScope_Keep() {
	var sum *tensor.T
	{
		s := tensor.NewScope()
		x := s.FromInt64([]int64{1, 2, 3}, 3)
		sum = s.Keep(s.Sum(x, false))
		s.Close() // frees x, not sum
	}
	defer sum.Free()

	s := tensor.NewScope()
	defer s.Close()
	fmt.Println(s.Item(sum))
	// Output: 6
}

// Tensors cross to and from gotch without copying data.
func ExampleFromTS() {
	x := ts.MustOfSlice([]float32{1, 2, 3}) // a gotch tensor
	defer x.MustDrop()

	s := tensor.NewScope()
	defer s.Close()
	t := s.Track(tensor.FromTS(x)) // a new handle to x's storage, freed by s
	y := s.MulScalar(t, 2)
	back := s.Keep(y).ToTS() // y moves into a gotch tensor the caller owns
	defer back.MustDrop()
	fmt.Println(back.Float64Values())
	// Output: [2 4 6]
}
