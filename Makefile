# The two entry points of the README: `make demo` and `make test`. Both install what is
# missing first (Debian/Ubuntu packages, the .venv, the offline PlatformIO core).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# clang and libclang-rt-dev: libFuzzer with ASan and UBSan for firmware/fuzz/ (tests/test_fuzz.py);
# libflatbuffers-dev: flexbuffers.h for the TFLM runtime's options parser on the PC; g++ builds it.
APT_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib qemu-system-arm gcc g++ \
  clang libclang-rt-dev libflatbuffers-dev
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO := runs/demo

.PHONY: demo test setup system-packages clean

system-packages:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: system-packages $(BIN)/.installed
	$(BIN)/python -m mcu_onebit.platformio_setup

demo: setup
	$(BIN)/mcu-onebit train --dataset digits --arch tiny-resnet --out $(DEMO)/model.h5
	$(BIN)/mcu-onebit inspect $(DEMO)/model.h5
	$(BIN)/mcu-onebit convert $(DEMO)/model.h5 --board qemu-m4 --out $(DEMO)/qemu-m4
	$(BIN)/mcu-onebit flash --project $(DEMO)/qemu-m4/project
	$(BIN)/mcu-onebit eval --project $(DEMO)/qemu-m4/project --json $(DEMO)/eval.json; \
	  status=$$?; $(BIN)/mcu-onebit emulate --project $(DEMO)/qemu-m4/project --stop; exit $$status

test: setup
	$(BIN)/pytest -q

clean:
	rm -rf runs build .pytest_cache
