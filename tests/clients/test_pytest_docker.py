"""pytest-docker drives berth with its own code: `up --build --wait`, `port`, and `down -v`
at the end of the session; the test reaches the published port, runs a command in the
container and reads its logs through the same executor pytest-docker uses."""

import urllib.request


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def test_a_stack_up_reachable_exec_and_logs(docker_ip, docker_services):
    port = docker_services.port_for("web", 80)
    url = f"http://{docker_ip}:{port}/"
    docker_services.wait_until_responsive(timeout=20.0, pause=0.2, check=lambda: _ok(url))
    assert fetch(url) == "hello-from-berth\n"
    executor = docker_services._docker_compose
    assert executor.execute("exec -T web cat /www/index.html") == b"hello-from-berth\n"
    logs = executor.execute("logs --no-color web").decode()
    assert "web-started" in logs


def _ok(url: str) -> bool:
    try:
        return fetch(url) != ""
    except OSError:
        return False
