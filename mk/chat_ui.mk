# Chat UI (docs/chat_ui.md): its venv stamp, `make chat`, `make chat-image`, `make bench-chat`.
# `make chat` serves the model with `make serve`'s defaults (mk/model_server.mk: answer length, repetition
# penalty on the embedded model, THREADS=).
CHAT_PORT ?= 7860

$(VENV)/.stamp-chat-ui: chat_ui/requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r chat_ui/requirements.txt
	touch $@

DEPS += $(VENV)/.stamp-chat-ui

.PHONY: chat chat-image bench-chat
chat: $(VENV)/.stamp-model-server $(VENV)/.stamp-chat-ui  ## the embedded model + the chat UI on 127.0.0.1, URL printed; Ctrl-C stops both
	$(if $(MODEL),,MODEL_SERVER_DEFAULT_MAX_TOKENS=$${MODEL_SERVER_DEFAULT_MAX_TOKENS:-$(SERVE_MAX_TOKENS)} \
	  MODEL_SERVER_DEFAULT_REPEAT_PENALTY=$${MODEL_SERVER_DEFAULT_REPEAT_PENALTY:-$(SERVE_REPEAT_PENALTY)}) \
	  $(if $(THREADS),MODEL_SERVER_N_THREADS=$(THREADS)) \
	  $(BIN)/python tools/chat_local.py --host $(HOST) --model-port $(PORT) --ui-port $(CHAT_PORT) \
	  $(if $(MODEL),--model $(MODEL))

chat-image: $(DEPS)  ## build the chat UI image with buildah on the model server image's local base
	$(BIN)/python tools/imagekit.py build chat-ui

# Not part of `make test` (timings); BENCH_ARGS="--rounds 24" etc.
bench-chat: $(VENV)/.stamp-model-server $(VENV)/.stamp-chat-ui  ## the UI's overhead: TTFT and tokens/s through the UI vs direct
	$(BIN)/python -m bench chat-ui $(BENCH_ARGS)
