// Package hra is Householder Reflection Adaptation (Yuan et al. 2024,
// "Bridging The Gap between Low-rank and Orthogonal Adaptation via
// Householder Reflection Adaptation") as HF PEFT 0.13.2 implements it
// (HRAConfig, peft_type "HRA"): each wrapped Linear gets r vectors hra_u
// [in, r], and its weight is multiplied on the right by the product of
// their Householder reflections, W ← W·H with
// H = (I - 2u₁u₁ᵀ)(I - 2u₂u₂ᵀ)… (unit vectors), or with apply_GS the
// Gram-Schmidt-orthonormalised vectors U and H = I - 2UUᵀ. H is
// orthogonal, so unmerging multiplies by Hᵀ (the reflections in reverse).
//
//	cfg := hra.NewConfig()
//	cfg.R = 4
//	model, err := hra.Wrap(base, cfg) // PEFT's default targets (q_proj, v_proj)
//
// The default init (even r) repeats each of r/2 Kaiming-uniform vectors
// twice, so the reflections cancel and the wrapped model starts equal to
// its base. The forward applies the reflections to the input,
// x ← x - 2(x·u)uᵀ, before the base layer: the same product as PEFT's
// W·H without forming an [in, in] matrix.
package hra

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
