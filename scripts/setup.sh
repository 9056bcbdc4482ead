#!/usr/bin/env bash
# Prepares a machine for pgha: checks Node, installs pnpm, PostgreSQL server
# binaries and etcd where it can (Debian/Ubuntu as root), installs the workspace's
# dependencies from the lockfile and builds the packages. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

PNPM_VERSION=12.4.2
say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
have_apt() { command -v apt-get >/dev/null 2>&1; }
apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then say "apt-get update"; apt-get update -qq; apt_updated=1; fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# Node >= 20.19
command -v node >/dev/null 2>&1 || die "Node.js is not installed: install Node 20.19 or newer"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' \
  || die "Node $(node --version) is too old: pgha needs Node 20.19 or newer"

# pnpm, pinned
if ! command -v pnpm >/dev/null 2>&1 || [ "$(pnpm --version 2>/dev/null)" != "$PNPM_VERSION" ]; then
  if is_root; then
    say "installing pnpm $PNPM_VERSION"
    npm install --global --silent --no-fund --no-audit "pnpm@$PNPM_VERSION" >/dev/null
  else
    die "pnpm $PNPM_VERSION is needed: run 'npm install --global pnpm@$PNPM_VERSION' (or 'corepack enable')"
  fi
fi

# PostgreSQL server binaries (any supported version; pgha discovers it)
pg_found() {
  [ -n "${PGHA_PG_BIN:-}" ] && [ -x "$PGHA_PG_BIN/postgres" ] && return 0
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && return 0
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/postgres" ]
}
if ! pg_found; then
  if is_root && have_apt; then apt_install postgresql; else
    die "PostgreSQL server binaries not found: install them (Debian: apt-get install postgresql) or set PGHA_PG_BIN"
  fi
fi

# etcd server
if [ -z "${PGHA_ETCD_BIN:-}" ] && ! command -v etcd >/dev/null 2>&1; then
  if is_root && have_apt; then
    apt_install etcd-server
    # The Debian package may start a system-wide etcd on 2379, the port `pgha up`
    # uses for its own. pgha runs its own etcd; stop the service we just installed.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
      say "stopping and disabling the system etcd service the package started (pgha runs its own)"
      systemctl disable --now etcd >/dev/null 2>&1 || true
    fi
  else
    die "etcd not found: install etcd 3.4+ (Debian: apt-get install etcd-server) or set PGHA_ETCD_BIN"
  fi
fi

# The network-partition fault tests build namespaces with iproute2's `ip`;
# setpriv (util-linux) ties postgres's life to its agent's.
for tool in ip:iproute2 setpriv:util-linux; do
  if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
    if is_root && have_apt; then apt_install "${tool##*:}"; else
      say "warning: ${tool%%:*} not found (Debian package ${tool##*:}); some tests will be skipped or fail"
    fi
  fi
done

# As root, postgres must run as an unprivileged user.
if is_root && ! id "${PGHA_OS_USER:-postgres}" >/dev/null 2>&1; then
  say "creating the unprivileged OS user ${PGHA_OS_USER:-postgres} for postgres"
  useradd --system --user-group --home-dir /var/lib/postgresql --create-home --shell /bin/bash "${PGHA_OS_USER:-postgres}"
fi

say "installing dependencies (pnpm install --frozen-lockfile)"
pnpm install --frozen-lockfile --reporter=append-only 2>&1 | tail -n 3 >&2
say "building packages"
pnpm run build >/dev/null 2>&1 || { pnpm run build; die "build failed"; }
say "ready: 'pnpm pgha up' starts a local cluster, 'pnpm test' runs the tests"
