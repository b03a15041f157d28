#!/usr/bin/env bash
# Builds target/debian/repayd_<version>-1_<arch>.deb: the release binary, then the man
# pages and shell completions generated from it (clap definitions, so they always match
# the command line), then `cargo deb --no-build`. Needs `cargo install cargo-deb`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
bin=target/release/repayd
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
"$bin" generate man --out-dir "$assets/man"
"$bin" generate completions bash >"$assets/completions/repayd"
"$bin" generate completions zsh >"$assets/completions/_repayd"
"$bin" generate completions fish >"$assets/completions/repayd.fish"
cargo deb --no-build "$@"
