# edgeship: every target installs what it needs first, so a fresh clone needs no other step.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EDGESHIP := $(VENV)/bin/edgeship
STAMP := $(VENV)/.edgeship-installed
AGENT_VENV := .venv-agent
AGENT_STAMP := $(AGENT_VENV)/.edgeship-installed
DEB_PACKAGES := dataset-fashion-mnist openssh-server openssh-client dropbear-bin
# only `make test` needs these: headless Chromium renders the report index in a test
TEST_DEB_PACKAGES := chromium
PROFILE ?= default
TARGET ?= local
PYTEST_ARGS ?=
LAB_DEVICES ?= 4
INVENTORY ?= results/lab/farm.yaml
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: setup system-packages agent-venv build deploy sweep profile doctor rollback nightly lab-start lab-stop emu-device emu-stop emu-status test-arm test bench clean

setup: $(STAMP)

# Debian packages: installed when we are root, otherwise the exact command is printed.
system-packages:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "Installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
	  echo "edgeship: these Debian packages are missing:$$missing"; \
	  echo "edgeship: install them with: sudo apt-get update && sudo apt-get install -y$$missing"; \
	fi

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-packages
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,onnx,labgrid,cluster]'
	$(VENV)/bin/pip install -q --no-deps 'tf-keras>=2.21,<2.22'
	@touch $@

# A device-like Python: numpy 1.x and tflite-runtime 2.14, no TensorFlow (as on Raspberry Pi OS).
agent-venv: $(AGENT_STAMP)
$(AGENT_STAMP):
	$(PYTHON) -m venv $(AGENT_VENV)
	$(AGENT_VENV)/bin/pip install -q 'numpy<2' 'tflite-runtime==2.14.0'
	@touch $@

build: setup
	$(EDGESHIP) build --profile $(PROFILE)

# PROFILE on the command line (a name or a YAML path, e.g. one written by `edgeship sweep --select`)
# overrides the target's default_profile.
# An emulated device's target (emu-rpi4, emu-rpi3) exists while it runs: start it first (root; the first
# start builds its rootfs). It keeps running afterwards; `make emu-stop` stops it.
deploy: setup
	@case "$(TARGET)" in emu-rpi4|emu-rpi3) $(EDGESHIP) emu start --device $(TARGET:emu-%=%) || exit 2;; esac
	$(EDGESHIP) deploy $(TARGET) $(if $(filter command line,$(origin PROFILE)),--profile $(PROFILE))

# The accuracy-vs-cost sweep of profiles/sweeps/$(GRID).yaml on $(TARGET); add SELECT="latency_ms<=..,accuracy>=.."
# to pick a variant (written to results/chosen.yaml, then `make deploy TARGET=.. PROFILE=results/chosen.yaml`).
GRID ?= default
sweep: setup
	$(EDGESHIP) sweep --target $(TARGET) --grid $(GRID) $(if $(SELECT),--select "$(SELECT)" --write-profile results/chosen.yaml)

profile: setup
	$(EDGESHIP) profile $(TARGET)

doctor: setup
	$(EDGESHIP) doctor $(TARGET)

rollback: setup
	$(EDGESHIP) rollback $(TARGET)

# Nightly without hardware: loopback sshd devices plus, as root, both emulated Raspberry Pis
# (results/lab/farm.yaml), unless INVENTORY names your farm. PROFILE=quick (a name or a YAML path)
# builds and deploys that profile instead of each target's default_profile (`default`, a 20-30 minute
# build when nothing is cached).
# `edgeship nightly` exits 0 all well, 1 regression, 2 infrastructure failure. make cannot exit 1, so
# `make nightly` exits 0 when the job ran (a regression is in the printed summary and the reports),
# 2 when devices were unreachable or failed; GATE=1 makes a regression fail make too.
NIGHTLY_PROFILE = $(if $(filter command line environment,$(origin PROFILE)),--profile $(PROFILE))
GATE ?= 0
nightly: setup agent-venv
	@if [ "$(INVENTORY)" = "results/lab/farm.yaml" ]; then \
	  if [ "$$(id -u)" = 0 ]; then $(EDGESHIP) lab start --devices $(LAB_DEVICES) --with-emulated-pi || exit 2; \
	  else echo "edgeship: not root, so the emulated Raspberry Pis are left out (run as root to include them)"; $(EDGESHIP) lab start --devices $(LAB_DEVICES) || exit 2; fi; \
	fi
	@$(EDGESHIP) nightly --inventory $(INVENTORY) $(NIGHTLY_PROFILE); status=$$?; \
	if [ "$(INVENTORY)" = "results/lab/farm.yaml" ]; then $(EDGESHIP) lab stop; fi; \
	if [ $$status = 1 ] && [ "$(GATE)" != 1 ]; then echo "make nightly: a regression was found (see above); GATE=1 makes make fail on it"; exit 0; fi; \
	exit $$status

lab-start: setup agent-venv
	$(EDGESHIP) lab start --devices $(LAB_DEVICES)

lab-stop: setup
	$(EDGESHIP) lab stop

# Emulated Raspberry Pis under qemu-user; need root. EMU_DEVICE=rpi4 (arm64 Debian bookworm, target
# emu-rpi4, cached under results/emu/) or rpi3 (32-bit armhf bullseye, target emu-rpi3, under
# results/emu-rpi3/), or all. The first start of each builds its rootfs (a few minutes) once.
EMU_DEVICE ?= rpi4
emu-device: setup
	$(EDGESHIP) emu start --device $(EMU_DEVICE)

emu-stop: setup
	$(EDGESHIP) emu stop

emu-status: setup
	$(EDGESHIP) emu status

test-arm: setup agent-venv
	$(PY) -m pytest -m arm $(PYTEST_ARGS)

test: setup agent-venv
	@$(MAKE) --no-print-directory system-packages DEB_PACKAGES="$(TEST_DEB_PACKAGES)"
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup agent-venv
	$(PY) -m pipeline.bench
	$(PY) -m pipeline.bench seeds --profile squeezenet

# Stop the emulated devices first: while one runs, the host's /dev is bind-mounted inside its results/emu*.
clean:
	-@[ -x $(EDGESHIP) ] && $(EDGESHIP) emu stop >/dev/null 2>&1; true
	rm -rf --one-file-system results
