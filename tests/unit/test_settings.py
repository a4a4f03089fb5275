"""The settings never show a Redis password: not in repr, str, a dump, a log line or an error."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from worker.settings import Settings, masked_url

BROKER_PASSWORD = "broker-pw-8c1d4f"
RESULT_PASSWORD = "result-pw-2e7a90"
SHORT_PASSWORD = "pw-8c1d"
BROKER_URL = f"redis://default:{BROKER_PASSWORD}@redis.internal:6379/0"
RESULT_URL = f"rediss://:{RESULT_PASSWORD}@results.internal:6380/1"


@pytest.fixture
def settings() -> Settings:
    return Settings(broker_url=BROKER_URL, result_url=RESULT_URL)


def shown(text: str) -> list[str]:
    return [p for p in (BROKER_PASSWORD, RESULT_PASSWORD) if p in text]


def test_repr_and_str_of_the_settings_mask_the_redis_passwords(settings: Settings) -> None:
    assert shown(repr(settings)) == []
    assert shown(str(settings)) == []
    assert "redis://default:***@redis.internal:6379/0" in repr(settings)
    assert "rediss://:***@results.internal:6380/1" in str(settings)


def test_a_dump_of_the_settings_masks_the_redis_passwords(settings: Settings) -> None:
    assert shown(str(settings.model_dump())) == []
    assert shown(settings.model_dump_json()) == []
    assert settings.model_dump()["broker_url"] == "redis://default:***@redis.internal:6379/0"


def test_the_settings_logged_show_no_redis_password(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("halo.test").info("settings %s / %r", settings, settings)

    assert caplog.records, "nothing was logged: the check would prove nothing"
    assert shown(caplog.text) == []


def test_code_that_connects_still_reads_the_whole_url(settings: Settings) -> None:
    assert settings.broker_url == BROKER_URL
    assert settings.results_redis_url == RESULT_URL


def test_a_settings_error_does_not_quote_the_redis_url() -> None:
    # A URL of the wrong type (from code, not the environment) is quoted by default, whole
    # when it is short.
    with pytest.raises(ValidationError) as caught:
        Settings(broker_url=[f"redis://:{SHORT_PASSWORD}@h"])

    assert "broker_url" in str(caught.value)
    assert SHORT_PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
        ("redis://user:p%40ss@h/0", "redis://user:***@h/0"),
        ("rediss://u:a@b@h/0?ssl_cert_reqs=required", "rediss://u:***@h/0?ssl_cert_reqs=required"),
        ("redis://:pw@[::1/0", "***"),
        # A Sentinel URL lists sentinels; any part may carry the primary's password.
        (
            "sentinel://h1:26379;sentinel://u:pw@h2:26379/0",
            "sentinel://h1:26379;sentinel://u:***@h2:26379/0",
        ),
    ],
)
def test_a_masked_url_keeps_everything_but_the_password(url: str, masked: str) -> None:
    assert masked_url(url) == masked
