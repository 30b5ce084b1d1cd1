# Container images (docs/image.md). checkov lives in its own venv: its pins (packaging<24) clash with pytest's.
CHECKOV_VENV := $(VENV)/checkov

$(CHECKOV_VENV)/.stamp: requirements-checkov.txt | $(BIN)/python
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q -r requirements-checkov.txt
	touch $@

DEPS += $(CHECKOV_VENV)/.stamp

.PHONY: image lint-dockerfile
image: $(DEPS)  ## build the CPU model server image with buildah (no registry)
	$(BIN)/python tools/imagekit.py build model-server

lint-dockerfile: $(CHECKOV_VENV)/.stamp  ## checkov's checks of model_server/Dockerfile and chat_ui/Dockerfile
	$(CHECKOV_VENV)/bin/checkov -f model_server/Dockerfile -f chat_ui/Dockerfile --framework dockerfile --compact --skip-download
