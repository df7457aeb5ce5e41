"""Configuration in operation: the keys operators added, and ``smtpx config show``."""

from __future__ import annotations

import pytest

from smtpx.errors import ConfigError
from smtpx.mta.config import MtaConfig


def test_failed_retention_is_a_duration_or_never() -> None:
    assert MtaConfig.default().spool.failed_retention == 7 * 86_400
    assert MtaConfig.from_toml('[spool]\nfailed_retention = "3d12h"').spool.failed_retention == (
        3.5 * 86_400
    )
    assert MtaConfig.from_toml('[spool]\nfailed_retention = "Never"').spool.failed_retention is None
    with pytest.raises(ConfigError, match=r"spool.failed_retention: not a duration: 'soon'"):
        MtaConfig.from_toml('[spool]\nfailed_retention = "soon"')
    with pytest.raises(ConfigError, match=r"spool.failed_retention: must be more than 0"):
        MtaConfig.from_toml("[spool]\nfailed_retention = 0")
