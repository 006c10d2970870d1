package oft

import (
	"fmt"
	"math"

	"github.com/gopeft/peft/internal/orth"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
)

// PeftType is OFT's peft_type.
const PeftType peft.PeftType = "OFT"

// Config is PEFT 0.10's OFTConfig (a LyCORIS config). Field names follow
// HF's; JSON uses PEFT's keys and defaults, and keys this library does not
// know are kept from the file read. Not safe for concurrent mutation.
type Config struct {
	orth.Common
	// R is the number of diagonal blocks of each rotation (the block size
	// is ⌈out_features / r⌉) [8].
	R int `json:"r"`
	// ModuleDropout is the probability of skipping an adapter's rotation
	// for a whole forward pass in training, in [0, 1].
	ModuleDropout float64 `json:"module_dropout"`
	// Coft is constrained OFT: before every use each block is projected
	// onto the Frobenius ball of radius Eps·b²/√blocks (b the block size)
	// around zero, in place (PEFT writes the projected values into the
	// parameter).
	Coft bool `json:"coft"`
	// Eps is COFT's control strength [6e-5] (used only with Coft).
	Eps float64 `json:"eps"`
	// BlockShare makes every block share one parameter block.
	BlockShare bool `json:"block_share"`
	// RankPattern overrides R for the modules whose path matches a key (a
	// regex matched against the end of the path), in the keys' order.
	RankPattern orth.Pattern `json:"rank_pattern"`
	// AlphaPattern is LyCORIS's alpha_pattern: kept and written back; OFT
	// has no alpha.
	AlphaPattern orth.Pattern `json:"alpha_pattern"`
}

// NewConfig returns PEFT 0.10's defaults (r 8, eps 6e-5, task CAUSAL_LM);
// target_modules has no default and must be set.
func NewConfig() *Config {
	c := &Config{R: 8, Eps: 6e-5}
	c.Task = peft.CausalLM
	return c
}

func (c *Config) PeftType() peft.PeftType { return PeftType }

// Decode parses adapter_config.json of an OFT adapter of PEFT 0.10's
// format. The format of PEFT ≥ 0.14 (a config with oft_block_size, packed
// rotations applied to the input) is refused with an error naming the field.
func Decode(data []byte) (peft.Config, error) {
	c := NewConfig()
	c.Task = ""
	if err := orth.Decode(data, c, &c.Common); err != nil {
		return nil, fmt.Errorf("oft: adapter_config.json: %w", err)
	}
	if _, ok := c.Raw["oft_block_size"]; ok {
		return nil, fmt.Errorf("oft: adapter_config.json: field \"oft_block_size\": this is the OFT format of PEFT >= 0.14 " +
			"(packed skew-symmetric oft_R rotating the input), which this library does not implement; it reads PEFT 0.10's format (oft_r blocks rotating the output)")
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("oft: adapter_config.json: %w", err)
	}
	return c, nil
}

// Validate checks the fields' values.
func (c *Config) Validate() error {
	if c.R <= 0 {
		return fmt.Errorf("field \"r\" must be a positive integer, got %d", c.R)
	}
	if math.IsNaN(c.ModuleDropout) || c.ModuleDropout < 0 || c.ModuleDropout > 1 {
		return fmt.Errorf("field \"module_dropout\" must be in [0, 1], got %v", c.ModuleDropout)
	}
	if math.IsNaN(c.Eps) || math.IsInf(c.Eps, 0) || c.Eps < 0 {
		return fmt.Errorf("field \"eps\" must be a finite number >= 0, got %v", c.Eps)
	}
	if err := c.RankPattern.Validate("rank_pattern"); err != nil {
		return err
	}
	return c.ValidateCommon()
}

// defaultKeys are the keys PEFT 0.10 writes for an OFTConfig, with defaults.
var defaultKeys = map[string]any{
	"alpha_pattern": map[string]any{}, "auto_mapping": nil, "base_model_name_or_path": nil, "block_share": false,
	"coft": false, "eps": 6e-5, "inference_mode": true, "init_weights": true, "layers_pattern": nil,
	"layers_to_transform": nil, "module_dropout": 0.0, "modules_to_save": nil, "peft_type": "OFT", "r": 8,
	"rank_pattern": map[string]any{}, "revision": nil, "target_modules": nil, "task_type": nil,
}

// MarshalJSON renders adapter_config.json: PEFT 0.10's keys, the file's
// unknown keys kept, our values on top.
func (c *Config) MarshalJSON() ([]byte, error) {
	own := map[string]any{
		"r": c.R, "module_dropout": c.ModuleDropout, "coft": c.Coft, "eps": c.Eps, "block_share": c.BlockShare,
		"rank_pattern": c.RankPattern, "alpha_pattern": c.AlphaPattern,
	}
	if c.RankPattern.Keys == nil {
		own["rank_pattern"] = map[string]any{}
	}
	if c.AlphaPattern.Keys == nil {
		own["alpha_pattern"] = map[string]any{}
	}
	return c.Marshal(PeftType, defaultKeys, own)
}

// Prepare implements peft.TunerConfig: target_modules is required (PEFT
// 0.10's LyCORIS tuners have no default), "all-linear" is expanded.
func (c *Config) Prepare(model nn.Module) (peft.Targeting, error) {
	if err := c.Validate(); err != nil {
		return peft.Targeting{}, fmt.Errorf("oft: %w", err)
	}
	if !c.TargetModules.IsSet() {
		return peft.Targeting{}, fmt.Errorf("oft: field \"target_modules\" is required (PEFT's OFT has no default for model_type %q)", peft.ModelType(model))
	}
	return c.Targeting(model), nil
}

// CreateOrUpdate implements peft.TunerConfig (PEFT's _create_and_replace):
// a Linear becomes an oft.Linear; an oft.Linear already there gets the
// adapter added. rank_pattern picks r.
func (c *Config) CreateOrUpdate(t peft.Target) (peft.Tuner, error) {
	r := c.R
	if v, ok := c.RankPattern.Lookup(t.Path); ok {
		r = int(v)
	}
	var layer *Linear
	switch m := t.Module.(type) {
	case *Linear:
		layer = m
	default:
		base, err := orth.LinearOf("oft", t.Path, t.Module)
		if err != nil {
			return nil, err
		}
		layer = newLinear(base)
	}
	if err := layer.addAdapter(t.Adapter, settings{r: r, moduleDropout: c.ModuleDropout, coft: c.Coft, eps: c.Eps, blockShare: c.BlockShare}, c.Identity()); err != nil {
		return nil, fmt.Errorf("oft: %s: %w", t.Path, err)
	}
	return layer, nil
}
