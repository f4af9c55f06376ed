# microbox: `make run` and `make test` install whatever is missing first.
SHELL := /bin/bash
.DEFAULT_GOAL := run

VENV    := .venv
PY      := $(VENV)/bin/python
MB      := $(VENV)/bin/microbox
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The Debian release decides two package names: the kernel source (guest/kernel/releases,
# the table `microbox kernel build` reads too: bookworm 6.1, trixie 6.12) and libarchive
# (trixie renamed it in the 64-bit time_t transition). Named exactly: apt reads an
# unknown name with a dot as a pattern (linux-source-6.1 matched 6.12 on trixie).
RELEASE := $(shell . /etc/os-release 2>/dev/null && echo $$VERSION_CODENAME)
KERNEL_SERIES ?= $(shell awk '$$1 == "$(RELEASE)" {print $$2}' guest/kernel/releases)
LIBARCHIVE := $(if $(filter bookworm,$(RELEASE)),libarchive13,libarchive13t64)
APT_PACKAGES := qemu-system-x86 qemu-utils e2fsprogs busybox-static golang-go \
	linux-source-$(KERNEL_SERIES) build-essential flex bison bc libelf-dev libssl-dev cpio \
	xz-utils skopeo mmdebstrap uidmap $(LIBARCHIVE) docker-registry apache2-utils nftables \
	iproute2 patch
# `mke2fs -d -` (a tar stream on stdin) needs e2fsprogs >= 1.47.1: trixie has it, and
# bookworm-backports has it for bookworm.
E2FS_MIN := 1.47.1
BACKPORTS_LIST := /etc/apt/sources.list.d/microbox-backports.sources

.PHONY: setup system-packages python-env compile artifacts run test lint typecheck gotest pytest bench

setup: system-packages python-env compile artifacts

# Debian packages: one `apt-get update`, then install only what is missing.
system-packages:
	@if [ -z "$(KERNEL_SERIES)" ]; then \
		echo "microbox sets up on Debian 12 (bookworm) and 13 (trixie), not '$(RELEASE)';" \
			"name a kernel series of guest/kernel/releases: make KERNEL_SERIES=6.12 ..." >&2; \
		exit 2; \
	fi
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "installing: $$missing"; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@have=$$(dpkg-query -W -f='$${Version}' e2fsprogs 2>/dev/null); \
	if ! dpkg --compare-versions "$$have" ge $(E2FS_MIN); then \
		if [ ! -e $(BACKPORTS_LIST) ]; then \
			mirror=$$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1); \
			mirror=$${mirror:-http://deb.debian.org/debian}; \
			echo "adding bookworm-backports from $$mirror for e2fsprogs >= $(E2FS_MIN)"; \
			printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
				"$$mirror" | $(SUDO) tee $(BACKPORTS_LIST) >/dev/null; \
		fi; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends \
			-t bookworm-backports e2fsprogs; \
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

# Kernel (minutes, once), agent and busybox image (seconds), debian image (about a
# minute, once: later data dirs reuse the build cached in ~/.cache/microbox/images).
artifacts: python-env
	$(MB) kernel build
	$(MB) agent build
	$(MB) image build busybox >/dev/null
	$(MB) image build debian >/dev/null

run: setup
	$(MB) run --rm -- sh -c 'echo "hello from $$(uname -sr) in a microbox ($$(. /etc/os-release; echo $$PRETTY_NAME))"'

lint: python-env
	$(VENV)/bin/ruff check src tests bench scripts
	$(PY) scripts/states_doc.py --check
	$(PY) scripts/gen_protocol.py --check

typecheck: python-env
	$(VENV)/bin/mypy

gotest: system-packages
	cd proto && test -z "$$(gofmt -l .)" && go vet ./... && go test ./...
	cd guest/agent && test -z "$$(gofmt -l .)" && go vet ./... && go test ./...
	cd host/shim && test -z "$$(gofmt -l .)" && go vet ./... && go test ./...

pytest: setup
	$(VENV)/bin/pytest -q

test: setup lint typecheck gotest pytest

bench: setup
	$(PY) bench/boot.py
	$(PY) bench/api.py
	$(PY) bench/images.py
	$(PY) bench/snapshot.py
