# Set-up and main tasks on a fresh Debian machine with Python 3.11 (see README.md).
# `make demo` runs the main job; `make test` runs the test suite under Xvfb. Both install what they need.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Qt 6 xcb + Mesa under Xvfb (as measured on Debian 12), mricron-data (Colin27, the brain sample's source),
# and dicom3tools: dciodvfy/dcentvfy validate the DICOM output in tests.
APT_PACKAGES := xvfb xauth libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libegl-mesa0 \
	libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
	libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xkb1 libxcb-xinerama0 libfontconfig1 \
	libdbus-1-3 libglib2.0-0 mricron-data dicom3tools

.PHONY: demo test system venv

system:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# torch==2.13.0 first: it is the CPU build; anything that admits a newer torch would pull CUDA.
$(BIN)/napari-brgm: pyproject.toml
	command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[testing]"
	touch $@

venv: $(BIN)/napari-brgm

demo: system venv
	$(BIN)/napari-brgm demo

test: system venv
	xvfb-run -a -s "-screen 0 1600x1000x24" $(BIN)/python -m pytest
