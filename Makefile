# The two commands of the README: `make demo` and `make test`. Both install what is missing.
BUILD ?= build
JOBS  ?= 2
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release

.PHONY: all deps configure build test test-core demo example bench clean

# ccache keys compilations on paths relative to the checkout, so another clone of the project (a
# CI checkout, a second worktree) reuses what this one compiled.
export CCACHE_BASEDIR := $(CURDIR)

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

configure: deps $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && OPENBLAS_NUM_THREADS=$${OPENBLAS_NUM_THREADS:-1} ctest --output-on-failure -j $(JOBS)

# The torch-free core alone: seconds, no LibTorch compile.
test-core: configure
	cmake --build $(BUILD) -j $(JOBS) --target tpipe_core_tests
	cd $(BUILD) && ctest --output-on-failure -L core

# The demo builds only the tpipe command (not the tests), then trains.
demo: configure
	cmake --build $(BUILD) -j $(JOBS) --target tpipe_cli
	$(BUILD)/tools/tpipe train

example: configure
	cmake --build $(BUILD) -j $(JOBS) --target tpipe_cli mlp_pipeline
	$(BUILD)/tools/tpipe run -n 2 -- $(BUILD)/examples/mlp_pipeline

# The peers need Debian's python3-torch, which install-deps.sh installs with the rest.
bench: configure
	cmake --build $(BUILD) -j $(JOBS) --target tpipe_cli tpipe_bench tpipe_checkpoint_bench tpipe_balance_bench tpipe_simulate_bench tpipe_depth_bench
	$(BUILD)/bench/tpipe_simulate_bench
	$(BUILD)/bench/tpipe_depth_bench --tpipe $(BUILD)/tools/tpipe
	$(BUILD)/bench/tpipe_bench --tpipe $(BUILD)/tools/tpipe
	$(BUILD)/bench/tpipe_checkpoint_bench
	$(BUILD)/bench/tpipe_balance_bench --tpipe $(BUILD)/tools/tpipe

clean:
	rm -rf $(BUILD)
