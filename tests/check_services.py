"""Fail loudly, with the command to fix it, when PostgreSQL or Redis is not reachable."""

from __future__ import annotations

import sys
from urllib.parse import urlparse

HOW_TO_START = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log",
}


def problems(database_url: str, redis_url: str) -> list[str]:
    found = []
    try:
        import psycopg

        parsed = urlparse(database_url)
        psycopg.connect(
            host=parsed.hostname,
            port=parsed.port or 5432,
            user=parsed.username or "postgres",
            dbname="postgres",
            connect_timeout=3,
        ).close()
    except Exception as exc:
        found.append(
            f"PostgreSQL is not reachable at {database_url}: {exc}\n  start it: {HOW_TO_START['PostgreSQL']}"
        )
    try:
        import redis

        redis.Redis.from_url(redis_url, socket_connect_timeout=3).ping()
    except Exception as exc:
        found.append(f"Redis is not reachable at {redis_url}: {exc}\n  start it: {HOW_TO_START['Redis']}")
    return found


if __name__ == "__main__":
    errors = problems(sys.argv[1], sys.argv[2])
    for error in errors:
        print(error, file=sys.stderr)
    sys.exit(1 if errors else 0)
