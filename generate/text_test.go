package generate

import (
	"fmt"
	"strings"
	"testing"

	"github.com/gopeft/peft/tokenizer"
	"github.com/stretchr/testify/require"
)

var _ Tokenizer = (*tokenizer.Tokenizer)(nil)

// numbers is a tokenizer whose tokens are decimal ids separated by spaces.
type numbers struct{}

func (numbers) EncodeIDs(text string, _ bool) ([]int, error) {
	var ids []int
	for _, f := range strings.Fields(text) {
		var id int
		if _, err := fmt.Sscan(f, &id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func (numbers) Decode(ids []int, _ bool) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, " ")
}

func TestText(t *testing.T) {
	m := loadTiny(t)
	cfg := greedy8()
	cfg.EOSTokenID = TokenIDs{71}
	got, err := Text(bg, m, numbers{}, []string{
		"328 384 353 219 207 297 389 171 312 166 505 106",
		"180 256 432 78 401 490 209 394 411",
	}, cfg)
	require.NoError(t, err)
	require.Equal(t, []string{"327", "313 372 62 389 343 169 372 62"}, got) // the eos is not decoded
	_, err = Text(bg, m, numbers{}, []string{"x"}, cfg)
	require.ErrorContains(t, err, "prompt 0")
}
