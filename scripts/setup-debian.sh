#!/usr/bin/env bash
# Installs what building and testing Scopecast needs on Debian/Ubuntu (run as root, or with sudo).
#   nasm, cmake   openh264's assembly (without nasm the encoder is silently ~3x slower) and the
#                 vendored libjpeg-turbo that turbojpeg builds
#   chromium, chromium-driver   the headless-browser test
#   ffmpeg        the baseline the transcode benchmark compares against
set -euo pipefail
packages=(nasm cmake pkg-config chromium chromium-driver ffmpeg)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
echo "setup: nasm $(nasm -v | awk '{print $3}'), cmake $(cmake --version | head -1 | awk '{print $3}'), $(chromium --version 2>/dev/null || echo 'no chromium')"
