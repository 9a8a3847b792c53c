# Everything a fresh machine needs: a virtualenv with the pinned stack, then the job or the tests.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(BIN)/tfrs-youtube demo

test: setup
	$(BIN)/python -m pytest -q -ra

clean:
	rm -rf $(VENV) saved_models/*/ datasets/*/
