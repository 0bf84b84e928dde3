"""pytest-docker pointed at berth: its `docker_compose_command` fixture is the berth binary
(scripts/clients-test passes it in BERTH); everything else is pytest-docker's own."""

import os

import pytest


@pytest.fixture(scope="session")
def docker_compose_command() -> str:
    return os.environ["BERTH"]


@pytest.fixture(scope="session")
def docker_compose_file(pytestconfig) -> str:
    return os.path.join(os.path.dirname(__file__), "compose.yaml")
