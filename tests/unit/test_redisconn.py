"""How a Redis URL and the HALO_REDIS_* settings become connections (worker.redisconn), read
from the clients and Celery configuration they produce; nothing is dialled."""

from __future__ import annotations

import logging
import ssl

import pytest
from pydantic import ValidationError
from redis.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from producers.jobs import Producer
from worker.celeryconfig import celery_config
from worker.redisconn import (
    RedisOptions,
    RedisUrlError,
    SentinelUrl,
    broker_use_ssl,
    connect,
    warn_if_insecure,
)
from worker.settings import Settings

SENTINELS = "sentinel://worker:s3cr3t@10.0.0.1:26379/2;sentinel://10.0.0.2:26380;sentinel://b"


def test_a_sentinel_url_lists_every_sentinel_and_the_primarys_credentials_and_db() -> None:
    parsed = SentinelUrl.parse(SENTINELS)
    assert parsed.sentinels == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("b", 26379)]
    assert (parsed.username, parsed.password, parsed.db) == ("worker", "s3cr3t", 2)


def test_a_malformed_sentinel_url_names_the_variable_and_hides_the_password() -> None:
    with pytest.raises(RedisUrlError) as refused:
        SentinelUrl.parse("sentinel://w:s3cr3t@a:1;redis://b:2")
    assert "HALO_BROKER_URL" in str(refused.value)
    assert "'redis://b:2'" in str(refused.value)
    with pytest.raises(RedisUrlError) as hidden:
        SentinelUrl.parse("redis://w:s3cr3t@a:1")
    assert "s3cr3t" not in str(hidden.value)


def test_a_sentinel_client_asks_for_the_named_primary_with_the_urls_credentials() -> None:
    client = connect(
        SENTINELS,
        RedisOptions(sentinel_master="halo-main"),
        socket_timeout_s=3,
        connect_timeout_s=1,
    )
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "halo-main"
    assert pool.connection_kwargs["password"] == "s3cr3t"
    assert pool.connection_kwargs["username"] == "worker"
    assert pool.connection_kwargs["db"] == 2
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    addresses = [(kwargs["host"], kwargs["port"]) for kwargs in sentinels]
    assert addresses == [("10.0.0.1", 26379), ("10.0.0.2", 26380), ("b", 26379)]


def test_sentinel_tls_verifies_the_primary_and_the_sentinels_with_the_ca_file() -> None:
    options = RedisOptions(
        sentinel_tls=True, ca_file="/etc/ca.pem", cert_file="/c.pem", key_file="/k.pem"
    )
    pool = connect(SENTINELS, options, socket_timeout_s=3, connect_timeout_s=1).connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.connection_class is SentinelManagedSSLConnection
    for kwargs in (
        pool.connection_kwargs,
        pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs,
    ):
        assert kwargs["ssl_cert_reqs"] == "required"
        assert kwargs["ssl_check_hostname"] is True
        assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
        assert (kwargs["ssl_certfile"], kwargs["ssl_keyfile"]) == ("/c.pem", "/k.pem")


def test_the_worker_and_flower_configuration_for_a_sentinel_broker() -> None:
    settings = Settings(broker_url=SENTINELS, redis_sentinel_master="halo-main")
    config = celery_config(settings)
    options = config["broker_transport_options"]
    assert options["master_name"] == "halo-main"
    assert options["visibility_timeout"] == settings.visibility_timeout_s
    assert config["broker_use_ssl"] is None


def test_rediss_with_a_ca_file_and_client_certificate_reaches_kombu_and_redis_py_alike() -> None:
    settings = Settings(
        broker_url="rediss://redis.example:6380/0",
        redis_ca_file="/etc/ca.pem",
        redis_cert_file="/c.pem",
        redis_key_file="/k.pem",
    )
    assert celery_config(settings)["broker_use_ssl"] == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": "/etc/ca.pem",
        "ssl_certfile": "/c.pem",
        "ssl_keyfile": "/k.pem",
    }
    producer = Producer.from_settings(settings)
    try:
        kwargs = producer.redis.connection_pool.connection_kwargs
        assert kwargs["ssl_ca_certs"] == "/etc/ca.pem"
        assert kwargs["ssl_cert_reqs"] == "required"
        assert producer._celery.conf.broker_use_ssl["ssl_ca_certs"] == "/etc/ca.pem"
    finally:
        producer.close()


def test_turning_verification_off_is_explicit_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    insecure = RedisOptions(tls_insecure=True)
    assert broker_use_ssl("rediss://r:6380/0", insecure) == {"ssl_cert_reqs": ssl.CERT_NONE}
    assert broker_use_ssl("rediss://r:6380/0", RedisOptions()) == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED
    }
    with caplog.at_level(logging.WARNING, logger="halo.redis"):
        warn_if_insecure(insecure, "redis://plain:6379/0")
        assert caplog.records == []  # no TLS, nothing to warn about
        warn_if_insecure(insecure, "rediss://r:6380/0")
    assert "NOT verified" in caplog.text


def test_a_client_certificate_without_its_key_is_refused_naming_both_variables() -> None:
    with pytest.raises(ValidationError, match="HALO_REDIS_CERT_FILE and HALO_REDIS_KEY_FILE"):
        Settings(redis_cert_file="/c.pem")
