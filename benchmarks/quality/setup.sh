#!/usr/bin/env bash
# Install the offline TTS engines that benchmarks/quality/tts_data.py runs: espeak-ng and flite.
# Does nothing when both are already on PATH; otherwise installs them with apt-get (as root).
set -euo pipefail

missing=()
for tool in espeak-ng flite; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "espeak-ng and flite are installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "error: ${missing[*]} missing; run this script as root (sudo bash $0) to install espeak-ng and flite with apt-get" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: ${missing[*]} missing and apt-get not found; install espeak-ng and flite with your package manager" >&2
    exit 1
fi

echo "installing espeak-ng and flite (missing: ${missing[*]})"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng flite
for tool in espeak-ng flite; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is still not on PATH after apt-get install" >&2; exit 1; }
done
echo "installed espeak-ng and flite"
