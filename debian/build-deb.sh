#!/usr/bin/env bash
# Builds target/debian/repayd_<version>_<arch>.deb: the binary, then the man pages and
# shell completions generated from it (clap definitions, so they always match the command
# line), then `cargo deb --no-build`. Needs `cargo install cargo-deb`. Extra arguments go
# to cargo deb (e.g. --deb-version 0.1.0-2, -o DIR).
#
# REPAYD_DEB_PROFILE picks the cargo profile (default release). CI's systemd test uses
# `dev`: it packages the debug binary `cargo test` has built already, instead of spending
# minutes on a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${REPAYD_DEB_PROFILE:-release}
case "$profile" in
dev | test) out_dir=debug ;;
*) out_dir=$profile ;;
esac
# REPAYD_DEB_NO_BUILD=1: the binary is built already (e.g. by `cargo test`).
if [ -z "${REPAYD_DEB_NO_BUILD:-}" ]; then
    cargo build --profile "$profile" --locked --bin repayd
fi
target_dir=${CARGO_TARGET_DIR:-target}
bin=$target_dir/$out_dir/repayd
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/man" "$assets/completions"
"$bin" generate man --out-dir "$assets/man"
"$bin" generate completions bash >"$assets/completions/repayd"
"$bin" generate completions zsh >"$assets/completions/_repayd"
"$bin" generate completions fish >"$assets/completions/repayd.fish"
# --strip: a dev build carries debug info the package does not need.
cargo deb --no-build --profile "$profile" --strip "$@"
