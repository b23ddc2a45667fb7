#!/bin/sh
# Installs what tests/borgmatic.rs needs on Debian 12 (run as root): borgbackup and Debian's
# borgmatic 1.7 (the old before_backup/after_backup/on_error hooks), and borgmatic 2.x from
# PyPI in its own virtualenv (PGBH_BORGMATIC2, default /opt/pgbh-borgmatic2; the `commands:`
# hooks) so that both generations are tested. CI runs it and sets PGBH_REQUIRE_BORGMATIC=1
# so a missing borgmatic fails the tests instead of skipping them.
set -eu
export DEBIAN_FRONTEND=noninteractive
venv=${PGBH_BORGMATIC2:-/opt/pgbh-borgmatic2}
# The 2.x release the tests were written against (docs/hooks/borgmatic.md); pinned so that CI
# does not change under us. Set PGBH_BORGMATIC2_VERSION to try another.
want=${PGBH_BORGMATIC2_VERSION:-2.1.10}
pkgs="borgbackup borgmatic python3-venv"
# shellcheck disable=SC2086
sh "$(dirname "$0")/apt-install-missing.sh" $pkgs
# Debian's python3 (not whatever python3 comes first on PATH), so the venv survives PATH changes.
if [ ! -x "$venv/bin/borgmatic" ] || [ "$("$venv/bin/borgmatic" --version 2>/dev/null)" != "$want" ]; then
    [ -x "$venv/bin/pip" ] || /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "borgmatic==$want"
fi
for f in /usr/bin/borg /usr/bin/borgmatic "$venv/bin/borgmatic"; do
    [ -x "$f" ] || { echo "install-borgmatic: $f is missing after installing" >&2; exit 1; }
done
v1=$(/usr/bin/borgmatic --version)
v2=$("$venv/bin/borgmatic" --version)
case $v2 in
    2.*) ;;
    *) echo "install-borgmatic: $venv/bin/borgmatic is $v2, not 2.x: remove $venv and run again" >&2; exit 1 ;;
esac
echo "install-borgmatic: borgmatic $v1 (Debian) and $v2 ($venv), $(/usr/bin/borg --version) ready"
