package lora_test

import (
	"github.com/gopeft/peft/internal/killtest"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopeft/peft/lora"
	"github.com/gopeft/peft/nn"
	"github.com/gopeft/peft/peft"
	"github.com/gopeft/peft/tensor"
	"github.com/stretchr/testify/require"
)

// version v of the adapter the kill test saves: the same shapes every
// time (r 4 on q/v), lora_alpha 8·(v+1) and every adapter weight v+1 — so
// new weights with the old config would load, and be wrong.
func killVersion(t testing.TB, v int) *peft.Model {
	m, err := lora.Wrap(loadBase(t.(*testing.T)), &lora.Config{R: 4, LoraAlpha: float64(8 * (v + 1)), TargetModules: lora.List("q_proj", "v_proj")})
	require.NoError(t, err)
	s := tensor.NoGradScope()
	defer s.Close()
	for _, np := range nn.TrainableParams(m) {
		s.CopyInto(np.Param.T(), s.Full(np.Param.DType(), float64(v+1), np.Param.Shape()...))
	}
	require.NoError(t, s.Err())
	return m
}

// killChild is TestSaveSurvivesKill in its child process: it saves
// versions 0, 1, 0, 1, … of an adapter into dir (and a named one into its
// "other" subfolder) until it is killed.
func killChild(t *testing.T, dir string) {
	ms := []*peft.Model{killVersion(t, 0), killVersion(t, 1)}
	killtest.Ready(dir)
	for i := 0; ; i++ {
		require.NoError(t, ms[i%2].Save(dir))
		require.NoError(t, ms[i%2].SaveAdapter(filepath.Join(dir, "other"), peft.DefaultAdapter))
	}
}

// checkVersion loads dir and asserts it is exactly version 0 or version 1.
func checkVersion(t *testing.T, dir string) int {
	base := loadBase(t)
	defer base.Free()
	m, err := peft.Load(base, dir)
	require.NoError(t, err, dir)
	cfg, _ := m.Config(peft.DefaultAdapter)
	alpha := cfg.(*lora.Config).LoraAlpha
	v := int(alpha/8) - 1
	require.Contains(t, []int{0, 1}, v, "lora_alpha %v", alpha)
	state, err := m.AdapterStateDict(peft.DefaultAdapter)
	require.NoError(t, err)
	s := tensor.NoGradScope()
	defer s.Close()
	for _, np := range state {
		for _, x := range s.Float32s(np.Param.T()) {
			require.Equal(t, float32(v+1), x, "%s: weights of another version than the config (lora_alpha %v)", np.Name, alpha)
		}
	}
	return v
}

// Issue #19 item 3: a process saving adapters is killed (SIGKILL) at
// random points; after each kill the folder loads as exactly the old or
// the new version, and the next save removes the temp files left behind.
func TestSaveSurvivesKill(t *testing.T) {
	if dir := os.Getenv(killtest.Env); dir != "" {
		killChild(t, dir)
		return
	}
	fixtures(t)
	dir := t.TempDir()
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	seen := map[int]int{}
	const kills = 8
	for k := 0; k < kills; k++ {
		killtest.Run(t, "TestSaveSurvivesKill", dir, rng, 20, 300)
		if _, err := os.Stat(filepath.Join(dir, peft.WeightsName)); err != nil {
			continue // killed before the first save finished
		}
		seen[checkVersion(t, dir)]++
		if _, err := os.Stat(filepath.Join(dir, "other", peft.WeightsName)); err == nil {
			checkVersion(t, filepath.Join(dir, "other"))
		}
	}
	t.Logf("versions found after %d kills: %v", kills, seen)
	// the next save cleans what the kills left
	m := killVersion(t, 0)
	require.NoError(t, m.Save(dir))
	for _, d := range []string{dir, filepath.Join(dir, "other")} {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if d == filepath.Join(dir, "other") {
				continue // not saved into by this Save
			}
			require.False(t, strings.Contains(e.Name(), ".tmp"), "left behind: %s", e.Name())
		}
	}
	require.Equal(t, 0, checkVersion(t, dir))
}

// The states a kill can leave, made on purpose: new weights beside the old
// config (stopped between the two renames) load as the new version; a
// config edited by hand after the save is respected; temp files of a
// killed save are removed by the next save.
func TestSaveSwitchStates(t *testing.T) {
	fixtures(t)
	dir, newer := t.TempDir(), t.TempDir()
	require.NoError(t, killVersion(t, 0).Save(dir))
	require.Equal(t, 0, checkVersion(t, dir))
	// newer: a copy of dir saved over with version 1, as the save into dir would
	old, err := os.ReadFile(filepath.Join(dir, peft.ConfigName))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(newer, peft.ConfigName), old, 0o644))
	require.NoError(t, killVersion(t, 1).Save(newer))

	// between the renames: the new weights, the old config
	require.NoError(t, os.Rename(filepath.Join(newer, peft.WeightsName), filepath.Join(dir, peft.WeightsName)))
	require.Equal(t, 1, checkVersion(t, dir))
	cfg, err := peft.ReadConfig(dir)
	require.NoError(t, err)
	require.Equal(t, 16.0, cfg.(*lora.Config).LoraAlpha, "ReadConfig agrees with Load")

	// the first save into an empty folder, stopped before the config
	first := t.TempDir()
	require.NoError(t, killVersion(t, 1).Save(first))
	require.NoError(t, os.Remove(filepath.Join(first, peft.ConfigName)))
	require.Equal(t, 1, checkVersion(t, first))

	// an edit of the config after a complete save wins over the copy
	edited := t.TempDir()
	require.NoError(t, killVersion(t, 1).Save(edited))
	editConfig(t, edited, map[string]any{"base_model_name_or_path": "edited"})
	cfg, err = peft.ReadConfig(edited)
	require.NoError(t, err)
	require.Equal(t, "edited", cfg.(*lora.Config).BaseModelNameOrPath)

	// leftovers of killed saves
	for _, f := range []string{".adapter_config.json.tmp123", ".adapter_model.safetensors.tmp-456"} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644))
	}
	require.NoError(t, killVersion(t, 0).Save(dir))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	require.ElementsMatch(t, []string{peft.ConfigName, peft.WeightsName}, names)
}
