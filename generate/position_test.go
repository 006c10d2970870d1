package generate

import (
	"testing"

	"github.com/gopeft/peft/models"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// spy records the position ids of each forward pass.
type spy struct {
	m   Model
	pos [][]int64
}

func (p *spy) ForwardT(s *tensor.Scope, b *models.Batch) *models.Output {
	if b.PositionIDs != nil {
		p.pos = append(p.pos, s.Int64s(b.PositionIDs))
	} else {
		p.pos = append(p.pos, nil)
	}
	return p.m.ForwardT(s, b)
}

// Input.PositionIDs: the prompt runs at them and each row continues from
// its last position + 1 (also under a repeated expansion: sampling with
// several return sequences).
func TestInputPositionIDs(t *testing.T) {
	m := &spy{m: loadTiny(t)}
	in := Input{InputIDs: [][]int64{{5, 6, 7}, {8, 9, 10}}, PositionIDs: [][]int64{{300, 301, 302}, {0, 7, 9}}}
	cfg := DefaultGenerationConfig()
	cfg.MaxNewTokens = 2
	out, err := Generate(bg, m, in, cfg)
	require.NoError(t, err)
	require.Len(t, out.Sequences[0], 5)
	require.Equal(t, [][]int64{{300, 301, 302, 0, 7, 9}, {303, 10}}, m.pos)

	bad := in
	bad.PositionIDs = [][]int64{{1, 2, 3}}
	_, err = Generate(bg, m, bad, cfg)
	require.ErrorContains(t, err, "1 position id rows for 2 prompts")
	bad.PositionIDs = [][]int64{{1, 2, 3}, {1, -2, 3}}
	_, err = Generate(bg, m, bad, cfg)
	require.ErrorContains(t, err, "position id [1][1] = -2 is negative")
}
