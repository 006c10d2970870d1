package data

import (
	"testing"

	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

func task(v int64) *int64 { return &v }

// Task ids (PEFT's task_ids column) reach the batch when every sample has
// one; packing keeps a block's task only when its samples agree.
func TestTaskIDs(t *testing.T) {
	a := Sample{InputIDs: []int64{1, 2}, TaskID: task(1)}
	b := Sample{InputIDs: []int64{3}, TaskID: task(0)}
	c := Sample{InputIDs: []int64{4, 5, 6}}
	col := Collator{PadID: 0}
	require.Equal(t, []int64{1, 0}, col.Collate([]Sample{a, b}).TaskIDs)
	require.Nil(t, col.Collate([]Sample{a, c}).TaskIDs)

	s := tensor.NoGradScope()
	defer s.Close()
	in, err := col.Collate([]Sample{a, b}).Inputs(s)
	require.NoError(t, err)
	require.Equal(t, []int64{1, 0}, s.Int64s(in.TaskIDs))
	in, err = col.Collate([]Sample{c}).Inputs(s)
	require.NoError(t, err)
	require.Nil(t, in.TaskIDs)

	packed := Pack([]Sample{a, {InputIDs: []int64{7}, TaskID: task(1)}, b, c}, 3)
	require.Len(t, packed, 3)
	require.Equal(t, int64(1), *packed[0].TaskID) // a + the other task-1 sample
	require.Equal(t, int64(0), *packed[1].TaskID) // b alone (c does not fit)
	require.Nil(t, packed[2].TaskID)              // c has none
	mixed := Pack([]Sample{a, b}, 3)
	require.Len(t, mixed, 1)
	require.Nil(t, mixed[0].TaskID, "tasks 1 and 0 in one block")
}
