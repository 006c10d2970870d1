package main

import (
	"github.com/gopeft/peft/boft"
	"github.com/gopeft/peft/hra"
	"github.com/gopeft/peft/oft"
	"github.com/gopeft/peft/peft"
)

// orthSpec is the quickstart's run of an orthogonal method (oft, boft,
// hra) on every linear layer of the decoder.
func orthSpec(m string) *spec {
	all := []string{"all-linear"}
	switch m {
	case "oft":
		return &spec{label: "OFT", name: "OFT (r 8, all linear)", lr: 5e-3, epochs: tuneEpochs,
			config: func() peft.Config {
				c := oft.NewConfig()
				c.TargetModules = oft.Regex("all-linear")
				return c
			},
			estimate: peft.MemoryOptions{Method: "oft", R: 8, TargetModules: all}}
	case "boft":
		return &spec{label: "BOFT", name: "BOFT (blocks of 8, all linear)", lr: 5e-3, epochs: tuneEpochs,
			config: func() peft.Config {
				c := boft.NewConfig()
				c.BoftBlockSize = 8
				c.TargetModules = boft.Regex("all-linear")
				return c
			},
			estimate: peft.MemoryOptions{Method: "boft", R: 8, TargetModules: all}}
	}
	return &spec{label: "HRA", name: "HRA (r 8, all linear)", lr: 5e-3, epochs: tuneEpochs,
		config: func() peft.Config {
			c := hra.NewConfig()
			c.TargetModules = hra.Regex("all-linear")
			return c
		},
		estimate: peft.MemoryOptions{Method: "hra", R: 8, TargetModules: all}}
}
