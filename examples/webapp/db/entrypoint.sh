#!/bin/sh
# Makes a PostgreSQL cluster in $PGDATA when it is empty (superuser $POSTGRES_USER with
# $POSTGRES_PASSWORD, database $POSTGRES_DB, password logins from any address), then runs
# `postgres` as user postgres, listening on every address. Other commands run as given.
set -eu
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

if [ "${1:-}" = postgres ]; then
  shift
  mkdir -p "$PGDATA" /run/postgresql
  chown postgres:postgres "$PGDATA" /run/postgresql
  chmod 0700 "$PGDATA"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set for a new database}"
    echo "db-entrypoint: initialising $PGDATA (user $user, database $db)"
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    chown postgres "$pwfile"
    as_postgres initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    printf '\n# db-entrypoint: password logins from other containers\nhost all all all scram-sha-256\n' \
      >>"$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
      # Single-user mode: nothing listens (and the healthcheck fails) until the real start.
      echo "CREATE DATABASE \"$db\" OWNER \"$user\";" | as_postgres postgres --single -D "$PGDATA" postgres >/dev/null
    fi
  fi
  exec setpriv --reuid=postgres --regid=postgres --init-groups -- postgres -D "$PGDATA" -c listen_addresses='*' "$@"
fi
exec "$@"
