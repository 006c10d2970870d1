package nn_test

import (
	"fmt"

	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/tensor"
)

// mlp is a module: a struct whose `nn` tags name its children as HF does.
type mlp struct {
	UpProj   *nn.Linear     `nn:"up_proj"`
	Layers   *nn.ModuleList `nn:"layers"`
	DownProj *nn.Linear     `nn:"down_proj"`
}

func ExampleNamedParams() {
	s := tensor.NewScope()
	defer s.Close()
	tensor.ManualSeed(0)
	m := &mlp{
		UpProj:   nn.NewLinear(s, 4, 8, true, 0.02),
		Layers:   &nn.ModuleList{Items: []nn.Module{nn.NewRMSNorm(s, 8, 1e-6)}},
		DownProj: nn.NewLinear(s, 8, 4, false, 0.02),
	}
	defer nn.FreeParams(m)

	for _, np := range nn.NamedParams(m) {
		fmt.Println(np.Name, np.Param.Shape())
	}
	if err := nn.Freeze(m); err != nil {
		panic(err)
	}
	if err := nn.Unfreeze(m.DownProj); err != nil {
		panic(err)
	}
	trainable, total := nn.CountParams(m)
	fmt.Printf("trainable %d of %d\n", trainable, total)
	// Output:
	// up_proj.weight [8 4]
	// up_proj.bias [8]
	// layers.0.weight [8]
	// down_proj.weight [4 8]
	// trainable 32 of 80
}

func ExampleFormat() {
	s := tensor.NewScope()
	defer s.Close()
	m := &mlp{
		UpProj:   nn.NewLinear(s, 4, 8, true, 0.02),
		Layers:   &nn.ModuleList{Items: []nn.Module{&nn.Dropout{P: 0.1}}},
		DownProj: nn.NewLinear(s, 8, 4, false, 0.02),
	}
	defer nn.FreeParams(m)
	fmt.Println(nn.Format(m))
	// Output:
	// mlp(
	//   (up_proj): Linear(in_features=4, out_features=8, bias=True)
	//   (layers): ModuleList(
	//     (0): Dropout(p=0.1, inplace=False)
	//   )
	//   (down_proj): Linear(in_features=8, out_features=4, bias=False)
	// )
}

func ExampleReplace() {
	s := tensor.NewScope()
	defer s.Close()
	m := &mlp{
		UpProj:   nn.NewLinear(s, 4, 8, true, 0.02),
		Layers:   &nn.ModuleList{Items: []nn.Module{nn.Identity{}}},
		DownProj: nn.NewLinear(s, 8, 4, false, 0.02),
	}
	defer nn.FreeParams(m)

	// A list item takes any module; a *Linear field takes only a *Linear.
	old, err := nn.Replace(m, "layers.0", &nn.Dropout{P: 0.2})
	fmt.Println(nn.TypeName(old), err)
	_, err = nn.Replace(m, "up_proj", &nn.Dropout{})
	fmt.Println(err)
	fmt.Println(nn.Paths(m))
	// Output:
	// Identity <nil>
	// nn: replace "up_proj": Dropout does not fit field "up_proj" of type *nn.Linear
	// [up_proj layers layers.0 down_proj]
}
