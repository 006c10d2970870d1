package dist_test

import (
	"fmt"

	"github.com/gopeft/peft/dist"
	"github.com/gopeft/peft/tensor"
)

// A program joins the group its launcher describes (torchrun, `peft train
// --nproc N`, or RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT set by hand) and
// averages a tensor over the ranks. Started alone, it is a single process
// and Default returns nil.
func ExampleDefault() {
	g, err := dist.Default(dist.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	s := tensor.NoGradScope()
	defer s.Close()
	x := s.FromFloat32([]float32{1, 2, 3}, 3)
	if g == nil {
		fmt.Println("single process:", s.Float32s(x))
		return
	}
	if err := g.AllReduce(dist.Avg, x); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("rank %d of %d: %v\n", g.Rank(), g.WorldSize(), s.Float32s(x))
	// Output: single process: [1 2 3]
}
