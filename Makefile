# microbox: `make run` and `make test` install whatever is missing first.
SHELL := /bin/bash
.DEFAULT_GOAL := run

VENV    := .venv
PY      := $(VENV)/bin/python
MB      := $(VENV)/bin/microbox
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := qemu-system-x86 qemu-utils e2fsprogs busybox-static golang-go \
	linux-source-6.1 build-essential flex bison bc libelf-dev libssl-dev cpio xz-utils

.PHONY: setup system-packages python-env compile artifacts run test lint typecheck gotest pytest bench

setup: system-packages python-env compile artifacts

# Debian packages: one `apt-get update`, then install only what is missing.
system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

python-env: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# PYTHONDONTWRITEBYTECODE may be set: byte-compile once so the CLI starts fast.
compile: python-env
	@$(PY) -m compileall -q src >/dev/null

# Kernel (minutes, once), agent and busybox image (seconds): all cached.
artifacts: python-env
	$(MB) kernel build
	$(MB) agent build
	$(MB) image build busybox >/dev/null

run: setup
	$(MB) run --rm busybox -- sh -c 'echo "hello from $$(uname -sr) in a microbox"'

lint: python-env
	$(VENV)/bin/ruff check src tests bench

typecheck: python-env
	$(VENV)/bin/mypy

gotest: system-packages
	cd guest/agent && test -z "$$(gofmt -l .)" && go vet ./... && go test ./...

pytest: setup
	$(VENV)/bin/pytest -q

test: setup lint typecheck gotest pytest

bench: setup
	$(PY) bench/boot.py
	$(PY) bench/api.py
