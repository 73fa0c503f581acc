# The two commands of the Quick start: `make demo` and `make test`; `make image` builds the
# container image (deploy/Containerfile) with podman from a locally made Debian base.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench clean image base-image deploy-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m tokenbroker.devstack.demo

test: $(STAMP) deploy-tools
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# The bench needs only wrk of the deploy tools.
bench: $(STAMP)
	@$(MAKE) --no-print-directory deploy-tools DEPLOY_TOOLS=wrk:wrk
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# -- deploy/: the image and the tools its tests run ------------------------------------------
# podman needs runc, the cgroupfs manager and no default ulimits on this kind of machine.
CONTAINERS_CONF := $(CURDIR)/build/containers.conf
PODMAN := CONTAINERS_CONF=$(CONTAINERS_CONF) podman --runtime runc --cgroup-manager cgroupfs
BASE_IMAGE := localhost/debian-python:bookworm
BASE_ROOTFS := build/debian-python-bookworm
IMAGE ?= localhost/tokenbroker:$(shell $(PYTHON) -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")
# Debian packages the deploy and console tests and the bench (wrk) use; installed only when a
# command is missing.
DEPLOY_TOOLS := podman:podman runc:runc debootstrap:debootstrap haproxy:haproxy wrk:wrk \
  kubectl:kubernetes-client chromium:chromium

deploy-tools:
	@missing=""; for pair in $(DEPLOY_TOOLS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

$(CONTAINERS_CONF):
	mkdir -p build
	printf '[containers]\ndefault_ulimits = []\n' > $@

# The base image, made once per machine: debootstrap's tree is kept under build/ (gitignored),
# the imported image in podman's store.
$(BASE_ROOTFS)/.done:
	rm -rf $(BASE_ROOTFS).partial
	debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
	  bookworm $(BASE_ROOTFS).partial
	rm -rf $(BASE_ROOTFS) && mv $(BASE_ROOTFS).partial $(BASE_ROOTFS)
	touch $@

base-image: deploy-tools $(CONTAINERS_CONF)
	@$(PODMAN) image exists $(BASE_IMAGE) || { \
	  $(MAKE) $(BASE_ROOTFS)/.done && \
	  tar -C $(BASE_ROOTFS) --exclude=./.done -c . | $(PODMAN) import - $(BASE_IMAGE); }

# Wheels made here (the build runs with no network); the tokenbroker wheel is always rebuilt.
# async-timeout: redis needs it on Python < 3.11.3 (bookworm's 3.11.2), a marker this host's
# newer Python skips.
image: $(STAMP) base-image
	rm -f build/wheels/tokenbroker-*.whl
	$(BIN)/python -m pip wheel --quiet --wheel-dir build/wheels --find-links build/wheels \
	  '.[postgres,redis]' 'async-timeout>=4.0.3'
	$(PODMAN) build --network=none --format docker --build-arg BASE=$(BASE_IMAGE) \
	  --build-arg REVISION=$$(git rev-parse --short HEAD 2>/dev/null || echo unknown) \
	  -f deploy/Containerfile -t $(IMAGE) .
