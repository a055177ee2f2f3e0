#!/usr/bin/env bash
# Install the system tools and servers the lab and the interop tests use, when missing.
# What is needed is listed in tools/system-deps.d/*.list, one "command package" pair a line
# (a path instead of a command is tested with -e), so each feature keeps its own list.
# As root (CI, or a developer with sudo) it uses apt-get; otherwise it only reports.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
need=()
while read -r probe package _; do
  case "$probe" in ''|'#'*) continue ;; esac
  if [[ "$probe" == /* ]]; then [ -e "$probe" ] && continue
  else command -v "$probe" >/dev/null && continue; fi
  [[ " ${need[*]-} " == *" $package "* ]] || need+=("$package")
done < <(cat "$here"/system-deps.d/*.list)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; else
    echo "system-deps: missing ${need[*]}; install them (apt-get install ${need[*]}) or run as root" >&2
    exit 0
  fi
else SUDO=""; fi
export DEBIAN_FRONTEND=noninteractive
echo "system-deps: installing ${need[*]}" >&2
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
