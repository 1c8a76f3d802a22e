# Recipes developers reach for. Everything kernel-related needs root.

# all tests (unit, kernel, peers), as CI runs them
test:
    ./scripts/install-deps && cargo test --workspace

# unit tests only: no root, no kernel
unit:
    cargo test --workspace --lib

# run scenario files (default: the whole catalogue)
run *FILES="scenarios/*.toml":
    ./scripts/install-deps && cargo run --release -p harness -- run {{FILES}}

# the catalogue, one line each
list:
    cargo run -q -p harness -- list

# the demo: one home LAN per NAT type, verdicts from UDP probes and the RFC 3489 classifier
demo *ARGS:
    ./scripts/install-deps && cargo run --release -p harness -- demo {{ARGS}}

# bring-up / teardown benchmark
bench:
    cargo bench -p harness --bench bringup

# SIGKILL `harness run` at 20 random moments (seed printed; KILL9_SEED=N replays) and prove one
# `harness reap` leaves nothing; CI runs 8 rounds of the same test
kill9 ROUNDS="20":
    ./scripts/install-deps && KILL9_ROUNDS={{ROUNDS}} cargo test -p harness --test kill9 -- --nocapture

# remove namespaces of dead runs
reap:
    cargo run -q -p harness -- reap

# formatting and lints, as reviewers expect them
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# review snapshot changes
review:
    cargo insta review

# a million generated inputs through every parser (SIP, SDP, STUN/TURN, RTP/RTCP, scenario
# files, the emulated ALG, captures): counts, times, 0 panics; FUZZ_SEED=N replays, NAME… picks
# parsers. CI runs the same harness with 10,000 each.
fuzz CASES="1000000" *NAMES="":
    FUZZ_CASES={{CASES}} cargo test --release -p harness --test fuzz -- {{NAMES}}

# the whole catalogue ROUNDS times, JOBS scenarios at once: pass rate per file, flakes with their
# ladders, what each round left (namespaces, processes, conntrack, fds), peak memory
soak ROUNDS="10" JOBS="8":
    ./scripts/install-deps && cargo build --release -p harness --bin harness
    cargo run --release -p harness --example soak -- --rounds {{ROUNDS}} --jobs {{JOBS}} --out runs/soak

# regenerate docs/catalogue.md (the field guide's lines beside the catalogue files)
catalogue:
    UPDATE_CATALOGUE=1 cargo test -q -p tests --test catalogue_doc

# regenerate docs/scenario-format.md and its JSON Schema from the types that parse the files
reference:
    UPDATE_REFERENCE=1 cargo test -q -p tests --test reference
