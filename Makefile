# Strata — the two commands a fresh machine needs are `make demo` and `make test`.
# Both install what they need first (scripts/setup.sh: idempotent, quiet when done).

CARGO ?= cargo
NEXTEST_PROFILE ?= $(if $(CI),ci,default)

.PHONY: all setup build demo lint test bench fuzz clean

all: build

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release --locked --workspace --bins

## demo: generate a small OCI image, import it into a temp store, list and verify it.
demo: build
	@scripts/demo.sh target/release

# Tests that need root (containerd, runc, FUSE and overlay mounts) are #[ignore]d, so a
# plain `cargo nextest run` shows them as skipped, never as passed; make test runs them
# too (--run-ignored all), and they fail when root or a tool is missing (see
# strata_testdata::host). Only the by-hand aids below, ignored for another reason (they
# need inputs or only print), stay out.
BY_HAND := test(=estargz::writer::bench::bench_convert) | test(=stargz::plan::tests::sweep)

## test: the gates (rustfmt, clippy with warnings as errors), then every test in the
## workspace (unit, integration, end-to-end, and those that need root) with nextest.
test: setup lint
	$(CARGO) nextest run --locked --workspace --all-targets --profile $(NEXTEST_PROFILE) --no-tests=fail \
		--run-ignored all -E 'not ($(BY_HAND))'

## lint: formatting and clippy, as CI checks them (fuzz/ is its own workspace).
lint: setup
	$(CARGO) fmt --all --check
	cd fuzz && $(CARGO) fmt --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

## bench: the side-by-side benchmarks (results go to benches/README.md by hand).
bench: build
	target/release/strata-bench ingest --strata target/release/strata
	target/release/strata-bench pull --strata target/release/strata
	target/release/strata-bench range

## fuzz: build every fuzz target (cargo-fuzz, nightly), then run each for FUZZ_SECONDS
## (default 30) from its seeds in fuzz/seeds/<target>/ (read-only); the working corpus is
## fuzz/corpus/<target>/. A crash stops the run; its input lands in fuzz/artifacts/<target>/
## and becomes a regression test.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS ?= tar_layer estargz_open elf_parse filter_parse fuse_request \
	multipart_byteranges hosts_toml daemon_config registry_json fdstore_protocol \
	erofs_validate erofs_from_tar artifact_layout chunk_index

fuzz:
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && $(CARGO) +nightly fuzz build
	@set -e; cd fuzz; for t in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$t seeds/$$t; \
		echo "fuzz: $$t for $(FUZZ_SECONDS)s"; \
		$(CARGO) +nightly fuzz run $$t corpus/$$t seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1; \
	done

clean:
	$(CARGO) clean
