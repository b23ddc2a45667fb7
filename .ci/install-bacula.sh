#!/bin/sh
# Installs what tests/bacula.rs needs on Debian 12 (run as root), then checks the programs
# the test looks for. CI runs it and sets PGBH_REQUIRE_BACULA=1 so a missing Bacula fails
# the test instead of skipping it. No daemon is enabled or started: the test runs its own.
set -eu
export DEBIAN_FRONTEND=noninteractive
# faketime: the levels test runs the director with its clock ahead (faketime -f +74s bacula-dir).
pkgs="bacula-director bacula-director-sqlite3 bacula-sd bacula-fd bacula-console sqlite3 shellcheck faketime"
# shellcheck disable=SC2086
sh "$(dirname "$0")/apt-install-missing.sh" $pkgs
# Debian's packages start the system daemons where an init system runs; the test needs
# none of them (it uses its own ports), so leave them be.
for f in /usr/sbin/bacula-dir /usr/sbin/bacula-sd /usr/sbin/bacula-fd /usr/sbin/bconsole /usr/bin/sqlite3 /usr/share/bacula-director/make_sqlite3_tables /etc/bacula/scripts/query.sql /usr/bin/faketime; do
    [ -e "$f" ] || { echo "install-bacula: $f is missing after installing$pkgs" >&2; exit 1; }
done
echo "install-bacula: Bacula $(/usr/sbin/bacula-dir -? 2>&1 | sed -n 's/^Version: \([^ ]*\).*/\1/p') ready"
