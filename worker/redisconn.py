"""Every Redis connection of the service, built in one place from the settings (CONTRACT §5).

The worker's result store, the metrics exporter, the producers and `halo-jobs`, and Celery's
broker connection (worker, producers, Flower) all come from here, so a Redis URL means the
same thing everywhere:

- ``redis://host:port/db``: one Redis, plain TCP.
- ``rediss://host:port/db``: one Redis over TLS. The server's certificate is verified, against
  ``HALO_REDIS_CA_FILE`` or else the system's CAs, hostname included; a client certificate is
  sent when ``HALO_REDIS_CERT_FILE``/``HALO_REDIS_KEY_FILE`` are set. Verification is off only
  with ``HALO_REDIS_TLS_INSECURE=true``, which every process logs as a WARNING when it starts.
- ``sentinel://[user:password@]host:port[/db][;sentinel://host:port...]``: kombu's form, the
  sentinels rather than the primary. The client asks them for the primary named
  ``HALO_REDIS_SENTINEL_MASTER`` and asks again after a failover. The user and password are
  the primary's (the sentinels take none); TLS, to sentinels and primary alike, is
  ``HALO_REDIS_SENTINEL_TLS=true``.

The engines are kombu's Sentinel transport and redis-py's `Sentinel`; this module only feeds
them the same options.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from worker.settings import Settings

log = logging.getLogger("halo.redis")

SENTINEL_SCHEME = "sentinel://"
_DEFAULT_SENTINEL_PORT = 26379


class RedisUrlError(ValueError):
    """Raised when a Redis URL cannot be used; the message names the variable to fix."""


@dataclass(frozen=True)
class RedisOptions:
    """What every Redis client is built with, besides its URL and timeouts."""

    sentinel_master: str = "mymaster"
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    sentinel_tls: bool = False
    tls_insecure: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The options the settings give (``HALO_REDIS_*``)."""

        def text(path: object) -> str | None:
            return None if path is None else str(path)

        return cls(
            sentinel_master=settings.redis_sentinel_master,
            ca_file=text(settings.redis_ca_file),
            cert_file=text(settings.redis_cert_file),
            key_file=text(settings.redis_key_file),
            sentinel_tls=settings.redis_sentinel_tls,
            tls_insecure=settings.redis_tls_insecure,
        )

    def uses_tls(self, url: str) -> bool:
        """Whether connections for `url` speak TLS."""
        return url.startswith("rediss://") or (is_sentinel(url) and self.sentinel_tls)

    def redis_py_tls(self) -> dict[str, Any]:
        """redis-py's connection keywords for TLS (verification on unless insecure)."""
        options: dict[str, Any] = {
            "ssl_cert_reqs": "none" if self.tls_insecure else "required",
            "ssl_check_hostname": not self.tls_insecure,
        }
        options.update(self._files())
        return options

    def kombu_tls(self) -> dict[str, Any]:
        """Celery's `broker_use_ssl` (kombu turns verification off when given none)."""
        options: dict[str, Any] = {
            "ssl_cert_reqs": ssl.CERT_NONE if self.tls_insecure else ssl.CERT_REQUIRED
        }
        options.update(self._files())
        return options

    def _files(self) -> dict[str, str]:
        files = {
            "ssl_ca_certs": self.ca_file,
            "ssl_certfile": self.cert_file,
            "ssl_keyfile": self.key_file,
        }
        return {key: value for key, value in files.items() if value}


def is_sentinel(url: str) -> bool:
    """Whether `url` lists sentinels (kombu's ``sentinel://`` form)."""
    return url.startswith(SENTINEL_SCHEME)


@dataclass(frozen=True)
class SentinelUrl:
    """A ``sentinel://`` URL taken apart: the sentinels, and the primary's credentials and db."""

    sentinels: list[tuple[str, int]]
    username: str | None
    password: str | None
    db: int

    @classmethod
    def parse(cls, url: str) -> Self:
        """Take a ``sentinel://a:1;sentinel://b:2`` URL apart; the first part that names a
        user, password or db gives it for all.

        Raises:
            RedisUrlError: a part is not a ``sentinel://host:port`` URL.
        """
        sentinels: list[tuple[str, int]] = []
        username = password = None
        db = 0
        for part in filter(None, (p.strip() for p in url.split(";"))):
            split = urlsplit(part)
            if split.scheme != "sentinel" or not split.hostname:
                raise RedisUrlError(
                    f"{_shown(part)} in a Sentinel URL: every part must be "
                    "sentinel://host:port (check HALO_BROKER_URL and HALO_RESULT_URL)"
                )
            sentinels.append((split.hostname, split.port or _DEFAULT_SENTINEL_PORT))
            username = username or (unquote(split.username) if split.username else None)
            password = password or (unquote(split.password) if split.password else None)
            path = split.path.strip("/")
            if path.isdigit() and db == 0:
                db = int(path)
        return cls(sentinels, username, password, db)


def connect(
    url: str,
    options: RedisOptions,
    *,
    socket_timeout_s: float | None,
    connect_timeout_s: float,
    health_check_interval_s: int = 0,
) -> redis.Redis:
    """A redis-py client (text replies) for `url`, built as the module docstring says.

    For a Sentinel URL the client follows the primary through failovers: each new connection
    asks the sentinels where the primary is.

    Raises:
        RedisUrlError: a malformed Sentinel URL.
    """
    common: dict[str, Any] = {
        "decode_responses": True,
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": connect_timeout_s,
        "health_check_interval": health_check_interval_s,
    }
    tls = options.redis_py_tls() if options.uses_tls(url) else {}
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **common, **tls)
    parsed = SentinelUrl.parse(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated.
        parsed.sentinels,
        sentinel_kwargs=_sentinel_kwargs(options, connect_timeout_s, tls),
        username=parsed.username,
        password=parsed.password,
        db=parsed.db,
        **({"ssl": True, **tls} if tls else {}),
        **common,
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        options.sentinel_master, redis_class=redis.Redis
    )
    return client


def _sentinel_kwargs(
    options: RedisOptions, connect_timeout_s: float, tls: dict[str, Any]
) -> dict[str, Any]:
    """How to talk to the sentinels themselves: short timeouts (a dead sentinel is skipped
    for the next), TLS like the primary's."""
    kwargs: dict[str, Any] = {
        "socket_timeout": connect_timeout_s,
        "socket_connect_timeout": connect_timeout_s,
    }
    if tls:
        kwargs.update({"ssl": True, **tls})
    return kwargs


def broker_transport_options(url: str, options: RedisOptions) -> dict[str, Any]:
    """Kombu transport options that `url` needs on top of the worker's own: for a Sentinel
    URL, the primary's name and how to reach the sentinels."""
    if not is_sentinel(url):
        return {}
    SentinelUrl.parse(url)  # a malformed URL is refused here, naming the variable
    tls = options.redis_py_tls() if options.uses_tls(url) else {}
    return {
        "master_name": options.sentinel_master,
        "sentinel_kwargs": _sentinel_kwargs(options, 5.0, tls),
    }


def broker_use_ssl(url: str, options: RedisOptions) -> dict[str, Any] | None:
    """Celery's `broker_use_ssl` for `url`: None without TLS, else verification on (kombu's
    own default for ``rediss://`` without options is off)."""
    return options.kombu_tls() if options.uses_tls(url) else None


def warn_if_insecure(options: RedisOptions, *urls: str) -> None:
    """Log, at every start, that Redis certificates are not verified, when that is so."""
    if options.tls_insecure and any(options.uses_tls(url) for url in urls):
        log.warning(
            "Redis TLS certificates are NOT verified (HALO_REDIS_TLS_INSECURE=true): anyone "
            "on the network path can impersonate Redis and read every job and record; unset "
            "it and give HALO_REDIS_CA_FILE instead",
            extra={"setting": "HALO_REDIS_TLS_INSECURE"},
        )


def _shown(part: str) -> str:
    """A URL part without its password, for an error message."""
    split = urlsplit(part)
    if split.password is None:
        return repr(part)
    return repr(part.replace(f":{split.password}@", ":***@", 1))
