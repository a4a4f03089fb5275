"""Worker and producer configuration, read from the environment in one place (CONTRACT §5).

The contract's variables come first; the rest tune delivery, retries and timeouts and have
defaults that suit production. Nothing else in the code reads the environment, except the
connections file loader, which reads each connection's named secret variable.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr, field_serializer, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# What a URL's password shows as wherever settings are printed or dumped.
MASKED: Final = "***"


def masked_url(url: str) -> str:
    """`url` with its password (if any) replaced by ``***``: ``redis://:***@host:6379/0``.

    A Sentinel URL (``sentinel://a:1;sentinel://u:pw@b:2``) is masked part by part: any part
    may carry the primary's password (`worker.redisconn`).
    """
    if ";" in url:
        return ";".join(masked_url(part) for part in url.split(";"))
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        # Unparseable (a bad port, say): nothing of it can be shown safely.
        return MASKED
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASKED}@{host}"))


class Settings(BaseSettings):
    """Everything a worker or producer is configured with; immutable once read.

    The Redis URLs may carry a password: `repr`, `str` and `model_dump` show them with the
    password masked (`masked_url`); code that connects reads the attributes themselves.
    """

    # Not extra="forbid": connection secrets conventionally live in HALO_<NAME>_SECRET variables,
    # which share the prefix but belong to the connections file, not to this class.
    # hide_input_in_errors: a validation error would otherwise print the values it read,
    # Redis URLs with their passwords among them.
    model_config = SettingsConfigDict(
        env_prefix="HALO_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    broker_url: str = "redis://localhost:6379/0"
    result_url: str | None = None
    result_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    connections_file: Path = Path("connections.toml")
    sentry_dsn: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SENTRY_DSN", "HALO_SENTRY_DSN")
    )
    sentry_environment: str | None = None

    # Redis as operators run it (CONTRACT §5; worker.redisconn builds every client from these).
    redis_sentinel_master: str = Field(default="mymaster", min_length=1)
    redis_ca_file: Path | None = None
    redis_cert_file: Path | None = None
    redis_key_file: Path | None = None
    # Sentinel URLs have no TLS scheme of their own: this says the sentinels and the primary
    # speak TLS (verified with HALO_REDIS_CA_FILE, like rediss://).
    redis_sentinel_tls: bool = False
    # Verification off: only for a lab, logged as a WARNING at every start.
    redis_tls_insecure: bool = False
    # Replication is asynchronous: a write the primary acknowledged can vanish in a failover.
    # With N > 0, claims, the write journal, records and accepted jobs are not relied on until
    # N replicas have them (Redis WAIT). 0 suits a single Redis, which has no replica to wait for.
    redis_min_replicas_acked: int = Field(default=0, ge=0)
    # A replica on the same network confirms in about a millisecond; longer means it is gone.
    redis_replica_ack_timeout_s: float = Field(default=2.0, gt=0)

    # Delivery. A message is redelivered when its worker died only after this long, so it must
    # exceed the longest a job can hold its message: `job_deadline_s` plus one request timeout.
    # Retries and deferrals never use Celery countdowns (see worker.deferrals), so no countdown
    # has to fit under it.
    visibility_timeout_s: int = Field(default=300, gt=0)
    job_deadline_s: float = Field(default=120.0, gt=0)
    max_deliveries: int = Field(default=5, ge=1)
    worker_concurrency: int = Field(default=256, ge=1)

    # Retries of retryable Halo errors: exponential backoff with full jitter. The total budget
    # outlasts Halo's rolling 5-minute rate window with room to spare.
    retry_max_attempts: int = Field(default=12, ge=1)
    retry_max_total_s: float = Field(default=900.0, gt=0)
    retry_base_s: float = Field(default=2.0, gt=0)
    retry_cap_s: float = Field(default=60.0, gt=0)

    # Halo HTTP. Halo's gateway answers 504 at about 60 s, so a read never needs longer.
    http_connect_timeout_s: float = Field(default=5.0, gt=0)
    http_read_timeout_s: float = Field(default=30.0, gt=0)
    lookup_ttl_s: float = Field(default=300.0, gt=0)
    token_refresh_margin_s: float = Field(default=120.0, ge=0)

    # A released backlog batch: at most this many jobs share one list read and one POST.
    batch_max: int = Field(default=20, ge=1, le=100)
    # A burst (worker.burst): a process running more than this many jobs of one connection at
    # once batches the next ones instead of spending 2-3 requests on each. 4 keeps a trickle of
    # jobs (one or two at a time) on the single-job path, with no added latency; 0: off.
    burst_threshold: int = Field(default=4, ge=0)

    log_level: str = "INFO"
    # Prometheus metrics of the worker (worker.metrics): off unless a port is set; containers
    # use 9808. Bound to every interface, since the scraper runs outside the container.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_address: str = "0.0.0.0"  # noqa: S104 - scraped from outside the container.

    # Liveness (worker.liveness): every `canary_interval_s` the worker sends itself a canary
    # task, whose run touches `heartbeat_file`; `halo-jobs health --worker` checks its age.
    heartbeat_file: Path = Path("/tmp/halo-worker-heartbeat")  # noqa: S108 - a liveness stamp, not data.
    canary_interval_s: float = Field(default=10.0, gt=0)
    # A worker whose every slot holds a job for its whole deadline (120 s plus a 30 s read)
    # takes no canary until one ends: busy, not dead. So the default allows that, plus a canary.
    heartbeat_max_age_s: float = Field(default=180.0, gt=0)

    @model_validator(mode="after")
    def _visibility_outlasts_a_job(self) -> Settings:
        needed = self.job_deadline_s + self.http_read_timeout_s
        if self.visibility_timeout_s <= needed:
            raise ValueError(
                f"HALO_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}) must be larger than "
                f"HALO_JOB_DEADLINE_S + HALO_HTTP_READ_TIMEOUT_S ({needed:g}), or a slow job "
                "would be delivered to a second worker while the first still runs it"
            )
        return self

    @model_validator(mode="after")
    def _client_certificate_is_whole(self) -> Settings:
        if (self.redis_cert_file is None) != (self.redis_key_file is None):
            raise ValueError(
                "HALO_REDIS_CERT_FILE and HALO_REDIS_KEY_FILE go together: set both (a client "
                "certificate and its key) or neither"
            )
        return self

    @field_serializer("broker_url", "result_url")
    def _masked(self, url: str | None) -> str | None:
        return None if url is None else masked_url(url)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            masked = name in ("broker_url", "result_url") and isinstance(value, str)
            yield name, masked_url(value) if masked else value

    @property
    def results_redis_url(self) -> str:
        """Where result records and the completion feed live (default: the broker)."""
        return self.result_url or self.broker_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings()
