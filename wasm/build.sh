#!/usr/bin/env bash
# Builds the browser visualiser into wasm/www/ (serve that folder with any static server:
#   python3 -m http.server -d wasm/www 8000). Installs the wasm32 target and the matching
# wasm-bindgen-cli when they are missing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
WB_VERSION=0.2.130   # must equal the wasm-bindgen crate pinned in wasm/Cargo.toml
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WB_VERSION" ]; then
  # No --locked: this machine's registry lacks some of the CLI's locked dependencies.
  cargo install wasm-bindgen-cli --version "$WB_VERSION"
fi
cargo build --locked --release -p podnet-wasm --target wasm32-unknown-unknown
wasm-bindgen --target web --out-dir wasm/www/pkg target/wasm32-unknown-unknown/release/podnet_wasm.wasm
echo "built wasm/www ($(du -h wasm/www/pkg/podnet_wasm_bg.wasm | cut -f1) of wasm)" >&2
