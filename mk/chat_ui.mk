# Chat UI (issue 15, docs/chat_ui.md): venv stamp, `make chat`, `make chat-image`.
#   make chat         serve the embedded model and the chat UI on 127.0.0.1, print the URL; Ctrl-C stops both
#   make chat-image   build chat_ui/Dockerfile with buildah on the model server image's local base
#   make bench-chat   the UI's overhead: TTFT and tokens/s through the UI vs direct (docs/chat_ui.md)
CHAT_PORT ?= 7860

$(VENV)/.stamp-chat-ui: chat_ui/requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r chat_ui/requirements.txt
	touch $@

DEPS += $(VENV)/.stamp-chat-ui

.PHONY: chat chat-image bench-chat
chat: $(VENV)/.stamp-model-server $(VENV)/.stamp-chat-ui
	$(BIN)/python tools/chat_local.py --host $(HOST) --model-port $(PORT) --ui-port $(CHAT_PORT) \
	  $(if $(MODEL),--model $(MODEL))

chat-image: $(DEPS)
	$(BIN)/python tools/imagekit.py build chat-ui

# Not part of `make test` (timings); BENCH_ARGS="--rounds 24" etc.
bench-chat: $(VENV)/.stamp-model-server $(VENV)/.stamp-chat-ui
	$(BIN)/python -m bench chat-ui $(BENCH_ARGS)
