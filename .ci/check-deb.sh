#!/usr/bin/env bash
# CI, run by .ci/run as root on Debian 12: build the .deb, check it with lintian, install it
# with apt as a user would, check what it installed (man page, bash completion, directories,
# modes), and run the demo with the installed binary and hooks.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
fail() { echo "check-deb: $*" >&2; exit 1; }

start=$(date +%s)
deb=$(scripts/build-deb.sh | tail -n 1)
echo "check-deb: built $deb in $(($(date +%s) - start)) s"

# Errors fail; warnings are printed.
lintian --fail-on error "$deb" || fail "lintian reports errors for $deb"

# Minimal images (Docker's) keep man pages out of every package: let ours in.
if grep -rqs 'path-exclude.*/usr/share/man' /etc/dpkg/dpkg.cfg.d/; then
    echo 'path-include /usr/share/man/man1/pg-backup-hooks*' >/etc/dpkg/dpkg.cfg.d/zz-pg-backup-hooks-man
fi
apt-get install -y -qq --reinstall "$deb" >/dev/null

[ "$(command -v pg-backup-hooks)" = /usr/bin/pg-backup-hooks ] || fail "pg-backup-hooks is not /usr/bin/pg-backup-hooks"
pg-backup-hooks --version
# restore_command's program is installed beside it and loads no OpenSSL (it starts fast).
[ -x /usr/bin/pg-backup-hooks-wal-restore ] || fail "/usr/bin/pg-backup-hooks-wal-restore is missing"
if ldd /usr/bin/pg-backup-hooks-wal-restore | grep -q libssl; then
    fail "pg-backup-hooks-wal-restore links OpenSSL"
fi
# So is archive_command's.
[ -x /usr/bin/pg-backup-hooks-wal-archive ] || fail "/usr/bin/pg-backup-hooks-wal-archive is missing"
if ldd /usr/bin/pg-backup-hooks-wal-archive | grep -q libssl; then
    fail "pg-backup-hooks-wal-archive links OpenSSL"
fi
[ -x /usr/lib/pg-backup-hooks/hooks/generic ] || fail "no /usr/lib/pg-backup-hooks/hooks/generic"
[ -x /usr/lib/pg-backup-hooks/hooks/amanda ] || fail "no /usr/lib/pg-backup-hooks/hooks/amanda"
[ "$(stat -c '%a %U' /etc/pg-backup-hooks/env.example)" = "640 root" ] || fail "env.example is not 0640 root"
[ "$(stat -c '%a %U' /run/pg-backup-hooks)" = "700 root" ] || fail "/run/pg-backup-hooks is not 0700 root"
[ "$(stat -c '%a %U' /var/lib/pg-backup-hooks/sidecar)" = "700 root" ] || fail "the sidecar directory is not 0700 root"

# The man page renders and documents restore-prep's flags.
page=$(LC_ALL=C.UTF-8 MANWIDTH=100 man -P cat pg-backup-hooks-restore-prep 2>&1) || fail "man pg-backup-hooks-restore-prep: $page"
grep -q -- '--archive-dir' <<<"$page" || fail "man pg-backup-hooks-restore-prep lacks --archive-dir: $page"
echo "check-deb: man pg-backup-hooks-restore-prep renders ($(wc -l <<<"$page") lines)"

# bash-completion loads the installed completion on demand and completes a subcommand.
words=$(bash -c '
    source /usr/share/bash-completion/bash_completion
    __load_completion pg-backup-hooks || exit 1
    fn=$(complete -p pg-backup-hooks | sed -E "s/.* -F ([^ ]+) .*/\1/")
    COMP_WORDS=(pg-backup-hooks restore-p); COMP_CWORD=1; COMP_LINE="pg-backup-hooks restore-p"; COMP_POINT=${#COMP_LINE}
    "$fn" pg-backup-hooks restore-p pg-backup-hooks
    printf "%s\n" "${COMPREPLY[@]}"') || fail "bash-completion does not load /usr/share/bash-completion/completions/pg-backup-hooks"
[ "$words" = restore-prep ] || fail "bash completes 'pg-backup-hooks restore-p' to '$words', not restore-prep"
echo "check-deb: bash completes 'pg-backup-hooks restore-p' to restore-prep"

# The demo, with the installed binary, pre and post run through the installed generic hook.
PGBH_BIN=/usr/bin/pg-backup-hooks PGBH_HOOKS_DIR=/usr/lib/pg-backup-hooks/hooks tests/backup-job.sh

# Leave the machine as it was: a later `cargo test` here must not find an old binary on PATH.
apt-get purge -y -qq pg-backup-hooks >/dev/null
[ ! -e /usr/bin/pg-backup-hooks ] || fail "purging the package left /usr/bin/pg-backup-hooks"
echo "check-deb: ok"
