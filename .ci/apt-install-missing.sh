#!/bin/sh
# Installs those of the Debian packages named as arguments that are not installed yet (as root;
# apt-get update only when something is missing). Shared by the .ci/install-*.sh scripts.
set -eu
export DEBIAN_FRONTEND=noninteractive
missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 $missing >/dev/null
fi
