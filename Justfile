# Builds share one target directory outside the clone, so CI on the same
# machine reuses them; everything is built with the one `release` profile.
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", home_directory() / ".cache/edgesnap/target")
bin := CARGO_TARGET_DIR / "release/edgesnap"

default: demo

# Build the host (and, through build.rs, the default policy plugin).
build:
    cargo build --release --locked --bin edgesnap

# Run the host from examples/edgesnap.toml, push a sample stream, show the snapshots.
demo: build
    bash scripts/demo.sh "{{bin}}"

# Lint, then every test: unit, plugin, integration, and a short fuzz run
# (12 s per target; fuzz/README.md).
test: lint build-failpoints
    cd plugins && cargo test --locked
    cargo test --release --locked --workspace
    bash scripts/fuzz.sh 12

# The fuzz targets for longer: SECONDS per target (all, or the TARGETS named).
fuzz SECONDS="600" *TARGETS:
    bash scripts/fuzz.sh {{SECONDS}} {{TARGETS}}

# Rewrite the fuzz targets' seed corpus from a fresh real capture (commit it).
fuzz-corpus:
    python3 scripts/fuzz-corpus.py fuzz/corpus

# The crash tests' host: the same code with its fail points compiled in
# (`--features failpoints`), copied beside the release binary. Release
# builds never carry them.
build-failpoints:
    cargo build --release --locked --bin edgesnap --features failpoints
    cp {{bin}} {{bin}}-failpoints
    cargo build --release --locked --bin edgesnap

# rustfmt and clippy, warnings as errors.
lint:
    python3 scripts/imports.py
    cargo fmt --all -- --check
    cd plugins && cargo fmt --all -- --check
    cargo clippy --release --locked --workspace --all-targets -- -D warnings
    cd plugins && cargo clippy --locked --target wasm32-wasip2 -- -D warnings
    cd fuzz && cargo fmt --check && CARGO_TARGET_DIR={{CARGO_TARGET_DIR}}/../fuzz-target cargo clippy --locked --all-targets -- -D warnings
    cd console && npx --no-install tsc --noEmit && node check-dist.mjs

# Rebuild the console's bundle from console/src into console/dist (commit it).
build-console:
    cd console && npm run build

# Build the guest plugins as wasm32-wasip2 components.
build-plugins:
    cd plugins && cargo build --release --locked --target wasm32-wasip2

# The management API over a large index (issue 4): query and delete latency; see BENCHMARKS.md.
# The index (10 M records, about 3 GB) is built once under the cache and reused.
bench-query *ARGS: build
    cargo build --release --locked --examples
    {{CARGO_TARGET_DIR}}/release/examples/query_bench --bin {{bin}} --dir {{CARGO_TARGET_DIR}}/../bench/query-10m {{ARGS}}

# The cost of a plugin decision (issue 5): the default and uploaded plugins vs. the same rules native; see BENCHMARKS.md.
bench-policy *ARGS:
    cargo build --release --locked --examples
    {{CARGO_TARGET_DIR}}/release/examples/policy_bench {{ARGS}}

# The capacity benchmark (issue 3): edgesnap vs nginx-rtmp + ffmpeg; see BENCHMARKS.md.
bench *ARGS: build
    cargo build --release --locked --examples
    python3 scripts/bench.py --bin {{bin}} --loadgen {{CARGO_TARGET_DIR}}/release/examples/loadgen --floor {{CARGO_TARGET_DIR}}/release/examples/floor --sink {{CARGO_TARGET_DIR}}/release/examples/sink --out {{CARGO_TARGET_DIR}}/../bench {{ARGS}}

# The fleet (issue 17): records into one index node and config-change
# propagation over 3 nodes (scripts/bench_fleet.py); capacity with [fleet]
# on and off is `just bench --nats ...` (bench-fleet-capacity).
bench-fleet *ARGS: build
    cargo build --release --locked --examples
    python3 scripts/bench_fleet.py --bin {{bin}} --flood {{CARGO_TARGET_DIR}}/release/examples/records_flood --nats {{CARGO_TARGET_DIR}}/../venv/bin/nats-server {{ARGS}}

# One edge at 500 streams with [fleet] off and on, alternating, same run (issue 17).
bench-fleet-capacity *ARGS: build
    cargo build --release --locked --examples
    python3 scripts/bench.py --bin {{bin}} --loadgen {{CARGO_TARGET_DIR}}/release/examples/loadgen --floor {{CARGO_TARGET_DIR}}/release/examples/floor --sink {{CARGO_TARGET_DIR}}/release/examples/sink --out {{CARGO_TARGET_DIR}}/../bench --nats {{CARGO_TARGET_DIR}}/../venv/bin/nats-server --edgesnap 500,500 --full= --expert= {{ARGS}}

# The capacity benchmark into S3 (issue 16): the same runs with an
# S3-compatible server (s3s-fs, installed once under the cache) on loopback.
bench-s3 *ARGS: build
    cargo build --release --locked --examples
    test -x {{CARGO_TARGET_DIR}}/../tools/bin/s3s-fs || cargo install s3s-fs@0.14.1 --features binary --locked --root {{CARGO_TARGET_DIR}}/../tools
    python3 scripts/bench.py --bin {{bin}} --loadgen {{CARGO_TARGET_DIR}}/release/examples/loadgen --floor {{CARGO_TARGET_DIR}}/release/examples/floor --sink {{CARGO_TARGET_DIR}}/release/examples/sink --out {{CARGO_TARGET_DIR}}/../bench --s3 {{CARGO_TARGET_DIR}}/../tools/bin/s3s-fs --full= --expert= {{ARGS}}

# Reliability (issue 6): 50 real-time streams into S3 (moto) through a
# 5-minute storage outage, with a callback receiver; see BENCHMARKS.md.
reliability *ARGS: build
    cargo build --release --locked --examples
    python3 scripts/reliability.py --bin {{bin}} --loadgen {{CARGO_TARGET_DIR}}/release/examples/loadgen --moto {{CARGO_TARGET_DIR}}/../venv/bin/moto_server --out {{CARGO_TARGET_DIR}}/../bench {{ARGS}}

# The release artifacts: a stripped binary in a tarball and a .deb (config,
# systemd unit, docs) under the cache's dist/; see README "Install".
dist: build
    bash scripts/dist.sh {{bin}} {{CARGO_TARGET_DIR}}/../dist
