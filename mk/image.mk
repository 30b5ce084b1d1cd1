# Model server image (issue 5, docs/image.md).
#   make image            build model_server/Dockerfile with buildah on a debootstrap'ed base (no registry)
#   make lint-dockerfile  checkov's Dockerfile checks
# checkov lives in its own venv: its pins (packaging<24) clash with pytest's.
CHECKOV_VENV := $(VENV)/checkov

$(CHECKOV_VENV)/.stamp: requirements-checkov.txt | $(BIN)/python
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q -r requirements-checkov.txt
	touch $@

DEPS += $(CHECKOV_VENV)/.stamp

.PHONY: image lint-dockerfile
image: $(DEPS)
	$(BIN)/python tools/imagekit.py build model-server

lint-dockerfile: $(CHECKOV_VENV)/.stamp
	$(CHECKOV_VENV)/bin/checkov -f model_server/Dockerfile --framework dockerfile --compact --skip-download
