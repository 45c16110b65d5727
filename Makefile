# The two commands of the README: `make demo` and `make test`. Both install what is missing.
BUILD ?= build
JOBS  ?= 2
CMAKE_FLAGS ?= -DCMAKE_BUILD_TYPE=Release
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: all deps configure build test test-core demo example bench clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja $(CMAKE_FLAGS)

configure: deps $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

test: build
	cd $(BUILD) && ctest --output-on-failure -j 1

# The torch-free core alone: seconds, no LibTorch compile.
test-core: configure
	cmake --build $(BUILD) -j $(JOBS) --target tpipe_core_tests
	cd $(BUILD) && ctest --output-on-failure -L core

demo: build
	$(BUILD)/tools/tpipe train

example: build
	$(BUILD)/tools/tpipe run -n 2 -- $(BUILD)/examples/mlp_pipeline

bench: build
	$(BUILD)/bench/tpipe_bench --tpipe $(BUILD)/tools/tpipe

clean:
	rm -rf $(BUILD)
