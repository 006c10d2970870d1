package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/gopeft/peft/charts"
	"github.com/gopeft/peft/train"
)

const plotUsage = `usage: peft plot [--out BASE] [--title T] RUN_DIR|metrics.jsonl

Draws a training run's loss, eval loss and learning rate against the step from the
Trainer's metrics.jsonl, as BASE.svg and BASE.png (default BASE: curves beside the
metrics file), and prints each file's path.
`

// plotCmd is `peft plot`: charts.Curves over a run's metrics.jsonl.
func plotCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("plot", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, plotUsage) }
	out := fs.String("out", "", "output path without extension (default: curves beside the metrics)")
	title := fs.String("title", "", "chart title (default: the run folder's name)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("plot: give one run folder or metrics.jsonl")
	}
	path := fs.Arg(0)
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, train.MetricsFile)
	}
	recs, err := charts.ReadMetrics(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if *out == "" {
		*out = filepath.Join(filepath.Dir(path), "curves")
	}
	if *title == "" {
		*title = filepath.Base(filepath.Dir(path))
	}
	files, err := charts.Curves(recs, *title, *out)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	for _, f := range files {
		fmt.Fprintln(stdout, f)
	}
	return nil
}
