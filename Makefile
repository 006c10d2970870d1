# gopeft: make demo runs the quickstart, make test runs every test.
.PHONY: setup test demo bench vet

setup:
	@bash scripts/setup.sh

test: setup
	go vet ./...
	go test ./...

demo: setup
	go run ./examples/quickstart

bench: setup
	go run ./bench
