# wishbot — two commands: `make demo` and `make test`.
# Both work on a fresh Debian machine: they create .venv, install the project
# and (when run as root) the Debian packages they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEBS   := docker-registry skopeo umoci apache2-utils bubblewrap git podman chromium tmux
# only for `make bench`: a real Debian root file system and peak-memory figures
BENCH_DEBS := debootstrap time
# only for `make screenshots`: emoji as people's browsers show them
SCREENSHOT_DEBS := chromium fonts-noto-color-emoji
JOBS   ?= 2

.PHONY: test demo lint typecheck pytest deps install-debs venv bench screenshots complexity clean

# Debian's python3 has no venv/ensurepip until python3-venv is installed
$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || \
	  $(MAKE) --no-print-directory install-debs PKGS="python3-venv"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

venv: $(BIN)/.installed

# Debian packages the tests and the demo use (a real registry, skopeo, umoci).
deps:
	@$(MAKE) --no-print-directory install-debs PKGS="$(DEBS)"

install-debs:
	@missing=""; for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (run as root or install them)"; exit 1; fi; \
	fi

lint: venv
	$(BIN)/ruff check --no-cache bot tests bench
	$(BIN)/ruff format --check --no-cache bot tests bench

typecheck: venv
	$(BIN)/mypy

pytest: venv deps
	$(BIN)/pytest -q -n $(JOBS)

test: lint typecheck pytest

demo: venv deps
	$(BIN)/wishbot demo

bench: venv deps
	@$(MAKE) --no-print-directory install-debs PKGS="$(BENCH_DEBS)"
	$(BIN)/python bench/resolve.py
	$(BIN)/python bench/convert.py
	$(BIN)/python bench/plan.py
	$(BIN)/python bench/latency.py

# functions above cyclomatic complexity 10 and 15 (radon); the norm is 10, never above 15
complexity: venv
	$(BIN)/python tests/complexity.py --list

# docs/*.png: the plan comment and the catalog page as people see them (headless Chromium)
screenshots: venv
	@$(MAKE) --no-print-directory install-debs PKGS="$(SCREENSHOT_DEBS)"
	$(BIN)/python docs/screenshots.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache build *.egg-info
