#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages Scopecast needs, only those missing (apt-get, as root or
# through sudo). scripts/run.sh and scripts/test.sh call it; there is no need to run it first.
#   scripts/setup-debian.sh build   what building the relay needs:
#       gcc, g++, make, libc6-dev the C/C++ toolchain rustc links with and openh264 and
#                                 libjpeg-turbo compile with (rustup does not bring one)
#       nasm, cmake, pkg-config   openh264's assembly (without nasm the encoder is silently
#                                 1.5-3x slower) and the vendored libjpeg-turbo turbojpeg builds
#       libvpx-dev                the VP8 encoder for browsers without H.264 (linked, found
#                                 by pkg-config)
#   scripts/setup-debian.sh test    that, and what the tests run against:
#       chromium, chromium-driver the browser tests;  ffmpeg  a camera and the benchmark baseline
#       firefox-esr               the VP8 browser test (offline it has no H.264); geckodriver
#                                 comes from crates.io (scripts/setup-rust.sh)
#       coturn, iproute2          TURN tests: a real TURN server between network namespaces
#       janus, janus-tools        WHIP publish tests: a real SFU, and janus-pp-rec to read its
#                                 recordings (its WHIP front end: scripts/setup-whip-server.sh)
#       python3-gi, gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,ugly}
#                                 RTSP cameras: GStreamer's RTSP server with x264 (Debian's python3)
#       vlc-bin, vlc-plugin-base  RTSP cameras: VLC's RTSP output (UDP only)
#       gir1.2-gst-plugins-bad-1.0, gstreamer1.0-plugins-bad, gstreamer1.0-nice
#                                 WHIP publishers: GStreamer's webrtcbin (and its ICE, libnice)
#       python3-venv              the aiortc WHIP publisher's virtualenv (scripts/setup-aiortc.sh)
# It also removes an openh264 build that an earlier `cargo build` made before nasm was here.
set -euo pipefail
cd "$(dirname "$0")/.."
build=(gcc g++ make libc6-dev nasm cmake pkg-config libvpx-dev)
test=(chromium chromium-driver firefox-esr ffmpeg coturn iproute2 janus janus-tools python3-gi gir1.2-gst-rtsp-server-1.0
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly vlc-bin vlc-plugin-base
      gir1.2-gst-plugins-bad-1.0 gstreamer1.0-plugins-bad gstreamer1.0-nice python3-venv)
case "${1:-test}" in
  build) packages=("${build[@]}") ;;
  test) packages=("${build[@]}" "${test[@]}") ;;
  *) echo "usage: $0 build|test" >&2; exit 2 ;;
esac
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "setup: install these packages with your system's package manager, then run this again: ${missing[*]}" >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: as root, run: apt-get install ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
    echo "setup: installing ${missing[*]} (sudo may ask for your password)" >&2
  fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# An openh264 compiled before nasm was installed is reused by cargo for good, without its
# assembly (relay/build.rs refuses to link it): remove it so the next build compiles it again.
for output in target/*/build/openh264-sys2-*/output target/*/*/build/openh264-sys2-*/output; do
  [ -f "$output" ] && grep -q "not using any assembly" "$output" || continue
  dir=$(dirname "$(dirname "$(dirname "$output")")")   # target/<profile>
  profile=$(basename "$dir"); [ "$profile" = debug ] && profile=dev
  echo "setup: openh264 in $dir was built without nasm; cleaning it" >&2
  cargo clean -q -p openh264-sys2 --profile "$profile"
done
echo "setup: nasm $(nasm -v | awk '{print $3}'), cmake $(cmake --version | head -1 | awk '{print $3}')$([ "${1:-test}" = test ] && echo ", $(chromium --version 2>/dev/null || echo 'no chromium')")" >&2
