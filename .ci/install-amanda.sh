#!/bin/sh
# Installs what tests/amanda.rs needs on Debian 12 (run as root), then checks the programs
# the test looks for. CI runs it and sets PGBH_REQUIRE_AMANDA=1 so a missing Amanda fails
# the test instead of skipping it. No daemon is enabled or started: amanda-common pulls in
# an inetd and registers amandad with it, but the test runs its own amandad on a private
# port (see docs/hooks/amanda.md) and needs no system inetd.
set -eu
export DEBIAN_FRONTEND=noninteractive
pkgs="amanda-server amanda-client amanda-common"
# shellcheck disable=SC2086
sh "$(dirname "$0")/apt-install-missing.sh" $pkgs
for f in /usr/sbin/amdump /usr/sbin/amcheck /usr/sbin/amfetchdump /usr/sbin/amlabel /usr/sbin/amadmin \
    /usr/sbin/amservice /usr/lib/amanda/amandad /usr/lib/amanda/application/amgtar; do
    [ -e "$f" ] || { echo "install-amanda: $f is missing after installing $pkgs" >&2; exit 1; }
done
id backup >/dev/null 2>&1 || { echo "install-amanda: the amanda user 'backup' does not exist" >&2; exit 1; }
echo "install-amanda: Amanda $(dpkg-query -W -f='${Version}' amanda-server | sed 's/^[0-9]*://; s/-.*//') ready"
