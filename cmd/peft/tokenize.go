package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"

	"github.com/gopeft/peft/tokenizer"
)

// tokenize implements `peft tokenize --tokenizer PATH [--add-special-tokens]`:
// it reads one JSON string per line from stdin and writes, in order, one
// JSON array of token ids per line to stdout. PATH is a tokenizer.json
// (tokenizer_config.json beside it is read too), a folder holding one, or
// GPT-2's encoder.json with vocab.bpe beside it.
func tokenize(args []string, stdout io.Writer, stdin io.Reader, stderr io.Writer) error {
	fs := flag.NewFlagSet("tokenize", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("tokenizer", "", "tokenizer.json, a folder with one, or GPT-2's encoder.json (vocab.bpe beside it)")
	special := fs.Bool("add-special-tokens", false, "add the post-processor's special tokens (e.g. BOS)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("tokenize: --tokenizer is required")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("tokenize: unexpected argument %q (the text comes on standard input)", fs.Arg(0))
	}
	tk, err := tokenizer.Load(*path)
	if err != nil {
		return err
	}
	r := bufio.NewReaderSize(stdin, 1<<16)
	w := bufio.NewWriterSize(stdout, 1<<16)
	var buf []byte
	for n := 1; ; n++ {
		line, rerr := r.ReadBytes('\n')
		if rerr != nil && rerr != io.EOF {
			return fmt.Errorf("tokenize: reading standard input: %w", rerr)
		}
		if len(line) == 0 && rerr == io.EOF {
			break
		}
		var text string
		if err := json.Unmarshal(line, &text); err != nil {
			return fmt.Errorf("tokenize: line %d: want a JSON string: %v", n, err)
		}
		ids, err := tk.EncodeIDs(text, *special)
		if err != nil {
			return fmt.Errorf("tokenize: line %d: %w", n, err)
		}
		buf = append(buf[:0], '[')
		for i, id := range ids {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = strconv.AppendInt(buf, int64(id), 10)
		}
		buf = append(buf, ']', '\n')
		if _, err := w.Write(buf); err != nil {
			return err
		}
		// Answer each line at once when nothing more is waiting, so
		// that the command also works as a pipe coprocess.
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			break
		}
	}
	return w.Flush()
}
