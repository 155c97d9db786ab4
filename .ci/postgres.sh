#!/usr/bin/env bash
# Makes PostgreSQL answer on 127.0.0.1:5432 with trust auth for the items example's
# end-to-end test: installs it with apt when missing, starts the cluster when not running.
set -euo pipefail

installed_here=false
if [ -z "$(ls /etc/postgresql 2>/dev/null)" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "installing: postgresql"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  installed_here=true
fi
version=$(ls /etc/postgresql | sort -V | tail -1)
if [ "$installed_here" = true ]; then
  # A fresh Debian cluster asks for passwords over TCP; the test machines' convention is trust
  # on loopback (a throwaway CI machine).
  sed -i '1i host all all 127.0.0.1/32 trust' "/etc/postgresql/$version/main/pg_hba.conf"
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
fi
if [ "$installed_here" = true ]; then
  pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
fi
for _ in $(seq 1 60); do
  pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
  sleep 0.5
done
echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
exit 1
