# Two entry points for a fresh machine:  `make run`  and  `make test`.  Both are idempotent.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test clean

FMNIST := /usr/share/datasets/fashion-mnist

$(STAMP): requirements.txt requirements-assets.txt pyproject.toml
	@# the study's real test set (Debian package; elsewhere set DIFFUSIA_FASHION_MNIST to a folder of the IDX files)
	test -d $(FMNIST) || test -n "$$DIFFUSIA_FASHION_MNIST" || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] \
	  && apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
	  || echo "note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): the study reports no FD vs real images"
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-assets.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default pipeline: the whole quantization study, report in out/study/.
run: $(STAMP)
	$(BIN)/diffusia study --model tiny --out out/study --overwrite

test: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

clean:
	rm -rf $(VENV) out
