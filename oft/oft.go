// Package oft is Orthogonal Finetuning (Qiu et al. 2023, "Controlling
// Text-to-Image Diffusion by Orthogonal Finetuning") as HF PEFT 0.10
// implements it (OFTConfig, peft_type "OFT"): each wrapped Linear gets an
// orthogonal matrix R, block-diagonal with r blocks, each the Cayley
// transform (I - S)(I + S)⁻¹ of the skew-symmetric part S of a learned
// block oft_r; R rotates the layer's output (bias excluded), and merging
// folds it into the weight, W ← Rᵀ W. Variants: block_share (one block for
// all r), coft (constrained OFT: the blocks are projected onto a ball of
// radius eps·b²/√blocks before each use, in place, as PEFT does) and
// module_dropout (in training an adapter is skipped with that
// probability).
//
//	cfg := oft.NewConfig()
//	cfg.R = 4
//	cfg.TargetModules = oft.List("q_proj", "v_proj")
//	model, err := oft.Wrap(base, cfg)
//
// Format: this package reads and writes PEFT 0.10's OFT adapters
// (…q_proj.oft_r [r, b, b], a LyCORIS config with rank_pattern and
// alpha_pattern). PEFT 0.14 rewrote OFT (oft_block_size, a packed oft_R
// that rotates the input) and PEFT ≥ 0.14 refuses 0.10 adapters; a config
// in the new format is refused here with an error naming oft_block_size.
package oft

import (
	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/peft"
)

func init() { peft.Register(PeftType, Decode) }

// Wrap freezes base and adds cfg as adapter "default" (PEFT's get_peft_model).
func Wrap(base models.CausalLM, cfg *Config) (*peft.Model, error) {
	return peft.New(base, cfg)
}

// Targets is target_modules / exclude_modules (see peft.Targets).
type Targets = peft.Targets

// List makes list targets.
func List(names ...string) Targets { return peft.TargetList(names...) }

// Regex makes regex targets (matched against the whole module path).
func Regex(pattern string) Targets { return peft.TargetRegex(pattern) }
