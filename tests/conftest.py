"""Shared test configuration."""

from __future__ import annotations

import os
import shutil
import ssl
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# CI runs the property tests a bit harder than a developer's edit-test loop.
settings.register_profile("ci", max_examples=400, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(
    "ci" if os.environ.get("CI") or os.environ.get("SMTPX_REQUIRE_INTEROP") else "dev"
)

REQUIRE_INTEROP = os.environ.get("SMTPX_REQUIRE_INTEROP", "") not in ("", "0")


def require_tool(name: str) -> str:
    """The path of a peer tool; skip the test when it is missing, or fail under
    SMTPX_REQUIRE_INTEROP=1 (as .ci/run sets), so CI never passes by skipping."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")
    if path is None:
        message = f"interop peer {name!r} is not installed"
        if REQUIRE_INTEROP:
            pytest.fail(message + " (SMTPX_REQUIRE_INTEROP=1)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def ca() -> Any:
    """A throwaway certificate authority (trustme): no key is ever committed."""
    import trustme

    return trustme.CA()


@pytest.fixture(scope="session")
def ca_file(ca: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_tls_context(ca: Any, *names: str) -> ssl.SSLContext:
    """A server context with a certificate for ``names`` issued by ``ca``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(context)
    return context
