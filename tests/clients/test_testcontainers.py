"""testcontainers' DockerCompose drives berth through the docker compose plug-in entry:
`docker compose` when a docker CLI is installed (berth as ~/.docker/cli-plugins/docker-compose
in a private DOCKER_CONFIG), else the plug-in binary itself (`docker-compose compose ...`)."""

import os
import shutil
import subprocess
import time
import urllib.request

from testcontainers.compose import DockerCompose

HERE = os.path.dirname(__file__)


def compose() -> DockerCompose:
    plugin = os.path.join(os.environ["DOCKER_CONFIG"], "cli-plugins", "docker-compose")
    command = None if shutil.which("docker") else plugin
    return DockerCompose(HERE, compose_file_name="compose.yaml", docker_command_path=command)


def test_a_stack_up_reachable_exec_logs_and_down():
    stack = compose()
    with stack:
        host, port = stack.get_service_host_and_port("web", 80)
        assert (host, port) == ("127.0.0.1", int(os.environ["WEB_PORT"]))
        body = ""
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    body = r.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert body == "hello-from-berth\n"
        out, err, code = stack.exec_in_container(["sh", "-c", "cat /www/index.html; exit 0"], "web")
        assert (out, code) == ("hello-from-berth\n", 0)
        container = stack.get_container("web")
        assert (container.State, container.Service) == ("running", "web")
        stdout, _ = stack.get_logs("web")
        assert "web-started" in stdout
    # `down --volumes` ran: nothing of the project is left.
    left = subprocess.run([os.environ["BERTH"], "ls", "-a", "-q"], capture_output=True, check=True)
    assert left.stdout.decode().strip() == ""
