"""Shared fixtures: real registries on loopback (one set per xdist worker).

- ``registry``: open, plain HTTP;
- ``basic_registry``: htpasswd basic auth (``.credentials`` = user, password);
- ``token_registry``: bearer token auth behind ``.token_server``;
- ``tls_registry``: HTTPS with a test CA (``.ca_file``, ``.verify``);
- ``fresh_registry``: an open registry of the test's own (for tests that
  delete or need an empty registry).

The session-scoped registries are shared by the tests of one worker: push
under a repository name of your own (see ``unique_repo``). To let the client
talk to a loopback registry, build a Config with
``insecure_registries=(registry.host,)`` (or, for TLS, ``private_registries``
and ``ca_bundle``), or set ``WISHBOT_INSECURE_REGISTRIES`` with monkeypatch.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from bot.sandbox.registry_server import LocalRegistry

#: ``cvmfs_repo``: the fake and (where installed) a real CernVM-FS repository
pytest_plugins = ["cvmfs_fixture", "gateway_fixture"]

_counter = itertools.count()


@pytest.fixture(scope="session")
def registry() -> Iterator[LocalRegistry]:
    with LocalRegistry() as server:
        yield server


@pytest.fixture(scope="session")
def basic_registry() -> Iterator[LocalRegistry]:
    with LocalRegistry(auth="basic") as server:
        yield server


@pytest.fixture(scope="session")
def token_registry() -> Iterator[LocalRegistry]:
    with LocalRegistry(auth="token") as server:
        yield server


@pytest.fixture(scope="session")
def tls_registry() -> Iterator[LocalRegistry]:
    with LocalRegistry(tls=True) as server:
        yield server


@pytest.fixture
def fresh_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    with LocalRegistry(directory=tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture
def unique_repo(request: pytest.FixtureRequest) -> str:
    """A repository name no other test of this worker uses, e.g. ``t/test-foo-3``."""
    name = "".join(ch if ch.isalnum() else "-" for ch in request.node.name.lower())
    name = "-".join(part for part in name.split("-") if part)[:60]
    return f"t/{name}-{next(_counter)}"
