# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo

.PHONY: demo test lint install oracle clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip setuptools wheel

# torch first: the CPU wheel on disk; a bare `torch` requirement would pull a multi-GB CUDA build.
# constraints.txt pins the versions tested together (unpinned, pip backtracks for minutes over
# s3fs/aiobotocore/boto3); pyproject.toml itself keeps ranges.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -c constraints.txt -e ".[test,bench]"
	touch $(STAMP)

install: $(STAMP)

# The official SAM 2 and SAM 3 are test-only oracles (design.md §1); hydra-core and iopath come with [test].
# No leading `-`: when it does not install, `make test` fails here instead of the parity tests passing
# by skipping (tests/parity also fail without it unless PARITY_ALLOW_NO_ORACLE=1).
$(VENV)/.oracle: $(STAMP)
	SAM2_BUILD_CUDA=0 $(BIN)/pip install --no-deps --no-build-isolation sam2==1.1.0
	$(BIN)/python -c "import sam2.build_sam"
	# SAM 3 (sam3.md): Meta's package without its deps (they would pull a CUDA torch), plus the ones its
	# tracker and builder import that the project lacks; open_clip_torch only for the CLIP BPE vocabulary
	# in its wheel. torchvision/triton are stubbed by tests/parity/sam3_oracle.py (no CPU build here).
	$(BIN)/pip install --no-deps -c constraints.txt sam3==0.1.4 timm einops ftfy wcwidth open_clip_torch
	$(BIN)/python -c "import importlib.util as u; assert u.find_spec('sam3') and u.find_spec('timm')"
	touch $@

oracle: $(VENV)/.oracle

# Two pytest workers (pytest-xdist), a test file each at a time (--dist loadfile: a module's expensive fixtures,
# such as an official run or a local Ray, are built once): the integration tests wait on Ray and S3 a good part
# of their time, so two files side by side on 2 cores take about half the wall time of one after the other.
# --no-loadscope-reorder: files go out in collection order (the Ray-cluster files first, see tests/conftest.py, then
# integration and parity, the slow ones), not most-tests-first, which left the long integration files for last.
TEST_WORKERS ?= 2

test: $(STAMP) oracle
	$(BIN)/python -m pytest tests -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check batchtrack tests jobs bench

demo: $(STAMP)
	$(BIN)/batchtrack demo --workdir $(DEMO_DIR)

clean:
	rm -rf $(VENV) $(DEMO_DIR)
