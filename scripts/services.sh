#!/usr/bin/env bash
# Makes sure what ScrapeThis needs on this machine is running: PostgreSQL on
# 127.0.0.1:5432 and Redis on 127.0.0.1:6379 (started, or installed with apt
# and started, when missing and we are root), Scrapy for *.py spiders, and
# python3-venv and pip for deployed projects' requirements.txt, and Chromium
# for the web console's browser test.
# With Docker, `docker compose up -d postgres redis` is the other way.
set -euo pipefail

PGHOST=127.0.0.1 PGPORT=5432 REDIS_HOST=127.0.0.1 REDIS_PORT=6379
say() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" = 0 ]; }
apt_updated=
apt_install() {
  is_root && command -v apt-get >/dev/null || return 1
  if [ -z "$apt_updated" ]; then apt-get update -qq >/dev/null || true; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null || (exec 3<>"/dev/tcp/$PGHOST/$PGPORT") 2>/dev/null; }
redis_up() { [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; }
wait_for() { for _ in $(seq 1 60); do "$1" && return 0; sleep 0.5; done; return 1; }

# PostgreSQL
if ! pg_up; then
  if ! command -v pg_ctlcluster >/dev/null; then
    say "PostgreSQL is not running and not installed; installing it with apt"
    apt_install postgresql || die "PostgreSQL is not running on $PGHOST:$PGPORT: install PostgreSQL 15 (apt-get install postgresql) or set DATABASE_URL."
    installed_pg=1
  fi
  ver=$(ls /etc/postgresql | sort -V | tail -n 1)
  if [ -n "${installed_pg:-}" ]; then
    # A fresh install asks for passwords on TCP; the local dev server trusts 127.0.0.1.
    hba=/etc/postgresql/$ver/main/pg_hba.conf
    sed -i 's/^\(host\s\+all\s\+all\s\+127\.0\.0\.1\/32\s\+\)\S\+/\1trust/' "$hba"
  fi
  say "starting PostgreSQL $ver"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start >/dev/null 2>&1 || true
  wait_for pg_up || die "PostgreSQL did not start on $PGHOST:$PGPORT; see /var/log/postgresql."
fi

# Redis
if ! command -v redis-cli >/dev/null || ! redis_up; then
  if ! command -v redis-server >/dev/null; then
    say "Redis is not running and not installed; installing it with apt"
    apt_install redis-server || die "Redis is not running on $REDIS_HOST:$REDIS_PORT: install Redis 7 (apt-get install redis-server) or set REDIS_URL."
  fi
  if ! redis_up; then
    say "starting Redis"
    redis-server --daemonize yes --bind "$REDIS_HOST" --port "$REDIS_PORT" --save "" --appendonly no >/dev/null
    wait_for redis_up || die "Redis did not start on $REDIS_HOST:$REDIS_PORT."
  fi
fi

# Scrapy, for *.py spiders (Debian's runs on /usr/bin/python3).
if ! /usr/bin/python3 -c 'import scrapy' 2>/dev/null; then
  say "Scrapy is missing; installing python3-scrapy with apt"
  apt_install python3-scrapy || die "Scrapy is missing: install it (apt-get install python3-scrapy) to run *.py spiders."
fi

# venv and pip, for deployed projects with a requirements.txt: each version
# gets a virtualenv that still sees the machine's Scrapy.
if ! /usr/bin/python3 -c 'import ensurepip, venv' 2>/dev/null; then
  say "python3-venv is missing; installing it with apt"
  apt_install python3-venv || die "python3-venv is missing: install it (apt-get install python3-venv) to deploy projects with a requirements.txt."
fi
if ! /usr/bin/python3 -m pip --version >/dev/null 2>&1; then
  say "pip is missing; installing python3-pip with apt"
  apt_install python3-pip || die "pip is missing: install it (apt-get install python3-pip) to deploy projects with a requirements.txt."
fi

# Chromium, for the web console's browser test (console/browser_test.go).
# Optional for running the platform: without it that one test skips, saying so.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  say "Chromium is missing; installing chromium with apt (for the console's browser test)"
  apt_install chromium fonts-dejavu-core || say "could not install chromium: the console's browser test will skip (apt-get install chromium)"
fi

command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || die "Go is missing: install Go 1.26 or newer from go.dev/dl."
say "PostgreSQL, Redis, Scrapy, venv, pip and Chromium are ready"
