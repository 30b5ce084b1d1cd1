# Inference chart (helper C): checkov in its own venv. checkov==3.3.30 cannot share .venv with the
# pinned dev tools (pip: ResolutionImpossible against requirements-dev.txt), so it gets a tool venv.
CHECKOV_VERSION := 3.3.30
.venv-checkov/.stamp: mk/chart.mk
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install -q --upgrade pip
	.venv-checkov/bin/pip install -q checkov==$(CHECKOV_VERSION)
	touch $@
DEPS += .venv-checkov/.stamp
