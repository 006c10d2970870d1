# gopeft: make demo runs the quickstart, make test runs every test.
.PHONY: setup test consumer demo bench vet fuzz

setup:
	@bash scripts/setup.sh

# test runs every package's tests, then builds and runs examples/consumer
# as a separate module with README's "Use it from your project" steps.
test: setup
	go vet ./...
	go test ./...
	@bash scripts/test-consumer.sh

consumer: setup
	@bash scripts/test-consumer.sh

demo: setup
	@bash scripts/demo-data.sh
	go run ./examples/quickstart

bench: setup
	go run ./bench

# fuzz runs every fuzz target (package:Target) for FUZZTIME each; the seed
# corpora (fixtures, inline seeds, testdata/fuzz) also run in `make test`.
FUZZTIME ?= 60s
FUZZ_TARGETS = \
	./safetensors:FuzzOpen ./safetensors:FuzzReadIndex \
	./models/llama:FuzzParseConfig ./models/gpt2:FuzzParseConfig \
	./models/bloom:FuzzParseConfig ./models/bert:FuzzParseConfig \
	./lora:FuzzLoRAConfig ./ia3:FuzzIA3Config ./prefix:FuzzPrefixConfig ./adalora:FuzzAdaLoRAConfig \
	./adapter:FuzzAdapterConfig ./prompt:FuzzPromptTuningConfig ./prompt:FuzzPTuningConfig \
	./tokenizer:FuzzTokenizerJSON ./tokenizer:FuzzFromJSON ./tokenizer:FuzzEncode \
	./data:FuzzReadInstructions ./data:FuzzReadConversations \
	./generate:FuzzParseGenerationConfig \
	./oft:FuzzOFTConfig ./boft:FuzzBOFTConfig ./hra:FuzzHRAConfig

fuzz: setup
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$pkg $$name ($(FUZZTIME))"; \
		go test -run='^$$' -fuzz="^$$name$$" -fuzztime=$(FUZZTIME) $$pkg; \
	done
