// Package boft is Orthogonal Butterfly (Liu et al. 2024, "Parameter-
// Efficient Orthogonal Finetuning via Butterfly Factorization") as HF PEFT
// 0.13.2 implements it (BOFTConfig, peft_type "BOFT"): each wrapped Linear
// gets an orthogonal R [in, in], the product of boft_n_butterfly_factor
// block-diagonal matrices of Cayley-transformed blocks, each conjugated by
// a butterfly permutation, and a learned per-output scale boft_s; the
// input is rotated before the base layer and the output rescaled,
// y = ((x R) Wᵀ) ⊙ s + bias, and merging folds both into the weight,
// W ← (W Rᵀ) ⊙ s.
//
//	cfg := boft.NewConfig()
//	cfg.BoftBlockSize, cfg.BoftNButterflyFactor = 8, 2
//	model, err := boft.Wrap(base, cfg) // PEFT's default targets (q_proj, v_proj)
//
// Butterfly factors ≥ 2 follow PEFT's GPU semantics (its CUDA extension
// fbd_cuda builds one block-diagonal matrix per factor). Without that
// extension PEFT silently trains factor 1 instead while the saved config
// keeps the requested factor, so a factor ≥ 2 adapter made by PEFT on a
// CPU holds one factor of blocks and fails to load here with a shape
// error, as it would in PEFT on a GPU. boft_dropout is PEFT's
// multiplicative dropout: in training, a share of the blocks of one random
// factor is replaced by the identity.
package boft

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
