#!/usr/bin/env bash
# Packages the release build: a stripped binary, a tarball (binary, config,
# systemd unit, docs) and a .deb that depends on the GStreamer runtime
# packages the binary uses (not the -dev ones). Usage: dist.sh BIN OUT_DIR
# The shipped binary is the tested one: the same `release` build, with
# overflow checks and debug assertions kept (ARCHITECTURE.md says why).
set -euo pipefail
bin="$1"; out="$2"
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
name="edgesnap_${version}_${arch}"
stage="$out/$name"
rm -rf "$stage" "$out/$name.deb" "$out/edgesnap-$version-linux-$arch.tar.gz"
mkdir -p "$stage/DEBIAN" "$stage/usr/bin" "$stage/etc/edgesnap" "$stage/lib/systemd/system" \
  "$stage/usr/share/doc/edgesnap/docs"

# Only line tables are in the build; strip them too (about 200 MB -> 36 MB).
strip --strip-all -o "$stage/usr/bin/edgesnap" "$bin"
install -m 0644 dist/edgesnap.toml "$stage/etc/edgesnap/edgesnap.toml"
install -m 0600 dist/edgesnap.env "$stage/etc/edgesnap/edgesnap.env"
install -m 0644 dist/edgesnap.service "$stage/lib/systemd/system/edgesnap.service"
install -m 0644 README.md CHANGELOG.md "$stage/usr/share/doc/edgesnap/"
install -m 0644 docs/*.md "$stage/usr/share/doc/edgesnap/docs/"
install -m 0644 examples/edgesnap.toml "$stage/usr/share/doc/edgesnap/edgesnap.example.toml"

# The GStreamer elements the decoder pool and the pull sources build
# (media/) and the libraries the binary links: appsrc, appsink,
# videoconvert, videoscale, urisourcebin, parsebin (plugins-base); jpegenc,
# rtspsrc (plugins-good); webpenc, av1dec, h264parse, h265parse, srtsrc,
# hlsdemux (plugins-bad); avdec_* (libav). tests/it/dist.rs checks them.
cat > "$stage/DEBIAN/control" <<CONTROL
Package: edgesnap
Version: $version
Architecture: $arch
Maintainer: edgesnap developers <edgesnap@localhost>
Section: video
Priority: optional
Depends: libc6 (>= 2.36), libgcc-s1, libglib2.0-0 (>= 2.74), libgstreamer1.0-0 (>= 1.22), libgstreamer-plugins-base1.0-0 (>= 1.22), gstreamer1.0-plugins-base (>= 1.22), gstreamer1.0-plugins-good (>= 1.22), gstreamer1.0-plugins-bad (>= 1.22), gstreamer1.0-libav (>= 1.22)
Installed-Size: $(du -sk "$stage" | cut -f1)
Homepage: https://localhost/edgesnap
Description: live-stream snapshot host
 Encoders push RTMP; edgesnap takes a JPG of every stream at a fixed
 interval on the stream's media clock, stores it in object storage,
 indexes it in redb, notifies with signed callbacks and serves an HTTP
 API and web console. Tenants' naming policies run as WebAssembly plugins.
CONTROL
printf '/etc/edgesnap/edgesnap.toml\n/etc/edgesnap/edgesnap.env\n' > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
POSTINST
chmod 0755 "$stage/DEBIAN/postinst"
dpkg-deb --root-owner-group -Zgzip --build "$stage" "$out/$name.deb" >/dev/null

tar -C "$stage" --owner=0 --group=0 -czf "$out/edgesnap-$version-linux-$arch.tar.gz" \
  usr/bin/edgesnap etc/edgesnap lib/systemd/system/edgesnap.service usr/share/doc/edgesnap
rm -rf "$stage"
ls -l "$out/$name.deb" "$out/edgesnap-$version-linux-$arch.tar.gz"
