"""The loopback topology of a scaled deployment, for `bench scale` and the tests.

    client -> nginx -> N x `companion serve` -> M x llama-server (+ K x companion /v1)
                            |        |
                      PostgreSQL   Redis

Every part is a real process on a free loopback port: nginx from Debian's package (SSE
unbuffered), `companion serve` with `model_servers` set (it loads no model), llama.cpp's
`llama-server` built by scripts/build-llama-server.sh, and optionally `companion serve`
processes on the model whose `/v1` is a model server too (the OpenAI protocol). PostgreSQL and
Redis are given by url.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from companion.bench.http_load import START_TIMEOUT_S, free_port, llama_server_path, wait_ready
from companion.errors import ConfigError

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-llama-server.sh"


@dataclass
class Proc:
    """One child process on a loopback port, its output in a log file."""

    name: str
    command: list[str]
    port: int
    log: Path
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    api_path: str = ""  # a model server's base URL past its root: "/v1" for an OpenAI one

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The URL `model_servers` names it by (its /v1 for an OpenAI server)."""
        return self.url + self.api_path

    def start(self, wait: bool = True) -> None:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("COMPANION_")}
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, env={**inherited, **self.env}, stdout=out, stderr=subprocess.STDOUT
            )
        if wait:
            self.wait()

    def wait(self, timeout_s: float = START_TIMEOUT_S) -> None:
        assert self.process is not None
        wait_ready(self.process, self.url + self.ready_path, self.log.read_text, timeout_s)

    def kill(self) -> None:
        """SIGKILL: the fault a crash or an OOM kill makes."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def pause(self) -> None:
        """SIGSTOP: a hung process (its port still accepts connections)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()


def model_server(
    model: Path, folder: Path, slots: int = 4, ctx_per_slot: int = 2048, cache_mb: int | None = None
) -> Proc:
    """A llama-server for `model` with `slots` parallel slots, one thread (a busy machine);
    `cache_mb`: its host-RAM prompt cache (`--cache-ram`, MiB; 0 = none, None = its default)."""
    binary = llama_server_path()
    if binary is None:
        raise ConfigError(
            f"no llama-server: run {BUILD_SCRIPT} (make test builds it) or set "
            "COMPANION_LLAMA_SERVER"
        )
    port = free_port()
    threads = os.environ.get("COMPANION_MODEL_SERVER_THREADS", "1")
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
               "-t", threads, "-tb", threads, "-np", str(slots), "-c", str(slots * ctx_per_slot),
               "--metrics", "--no-webui"]  # fmt: skip
    if cache_mb is not None:
        command += ["--cache-ram", str(cache_mb)]
    return Proc(f"llama-server:{port}", command, port, folder / f"llama-{port}.log", "/health")


def companion_model_server(model: Path, folder: Path) -> Proc:
    """A `companion serve` on `model` (its own SQLite, one thread) whose /v1 is a model server."""
    threads = os.environ.get("COMPANION_MODEL_SERVER_THREADS", "1")
    env = {"COMPANION_MODEL_PATH": str(model), "COMPANION_N_THREADS": threads,
           "COMPANION_MEMORY_ENABLED": "false", "COMPANION_ENABLE_CACHING": "false",
           "COMPANION_RATE_LIMIT_PER_MINUTE": "100000",
           "COMPANION_MAX_CONCURRENT_PER_USER": "64"}  # fmt: skip
    proc = app_instance(folder, env)
    proc.name, proc.api_path = f"companion-model:{proc.port}", "/v1"
    return proc


def app_instance(folder: Path, env: dict[str, str]) -> Proc:
    """A `companion serve` with its own data dir and the shared settings in `env`."""
    port = free_port()
    data = folder / f"app-{port}"
    data.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "companion", "--data-dir", str(data), "serve",
               "--port", str(port)]  # fmt: skip
    return Proc(f"companion:{port}", command, port, folder / f"app-{port}.log", "/healthz", env)


NGINX_CONF = """
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    upstream companion {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 2m;
        location / {{
            proxy_pass http://companion;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # Server-Sent Events: pass each token on at once, hold long replies open
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 600s;
            # an instance that is gone: the next one, for a request not yet sent to it (nginx
            # never resends a POST that reached an instance: it may have stored the message).
            # An instance's own 503 is the answer: passed on, not retried.
            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 2;
            proxy_connect_timeout 2s;
            # what nginx itself would answer 502/504 (the instance died with the request, no
            # instance left): 503 with Retry-After, in the app's error shape
            error_page 502 504 =503 @unavailable;
        }}
        location @unavailable {{
            default_type application/json;
            add_header Retry-After 2 always;
            return 503 '{unavailable}';
        }}
    }}
}}
"""


# nginx's own answer when no instance answered (the app's error shape, both APIs' fields)
UNAVAILABLE = json.dumps({"error": {
    "code": "instance_unavailable", "type": "server_error", "param": None,
    "message": "the app instance did not answer (it may have stopped mid-request); retry shortly",
}}, separators=(",", ":"))  # fmt: skip


def balancer(folder: Path, apps: list[Proc]) -> Proc:
    """nginx in front of `apps` (round robin; a failed instance is passed over)."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).is_file():
        raise ConfigError("nginx is not installed (apt-get install nginx-light)")
    port = free_port()
    servers = "\n".join(
        f"        server 127.0.0.1:{a.port} max_fails=1 fail_timeout=2s;" for a in apps
    )
    conf = folder / "nginx.conf"
    text = NGINX_CONF.format(folder=folder, servers=servers, port=port, unavailable=UNAVAILABLE)
    conf.write_text(text)
    command = [binary, "-p", str(folder), "-c", str(conf), "-g", "daemon off;"]
    return Proc(f"nginx:{port}", command, port, folder / "nginx.log", "/healthz")


@dataclass
class Topology:
    """nginx, the app instances and the model servers, started and stopped together."""

    folder: Path
    models: list[Proc]
    apps: list[Proc]
    nginx: Proc

    @property
    def url(self) -> str:
        return self.nginx.url

    def stop(self) -> None:
        for proc in [self.nginx, *self.apps, *self.models]:
            proc.stop()


def start_topology(
    model: Path,
    database_url: str,
    redis_url: str,
    *,
    apps: int = 2,
    models: int = 2,
    slots: int = 4,
    cache_mb: int | None = None,
    companions: int = 0,
    env: dict[str, str] | None = None,
    folder: Path | None = None,
) -> Topology:
    """Start `models` llama-servers and `companions` companion /v1 model servers, `apps`
    instances over them and nginx; stop all on failure."""
    folder = folder or Path(tempfile.mkdtemp(prefix="companion-topology-"))
    servers = [model_server(model, folder, slots, cache_mb=cache_mb) for _ in range(models)]
    servers += [companion_model_server(model, folder) for _ in range(companions)]
    started: list[Proc] = []
    try:
        for proc in servers:
            proc.start(wait=False)
            started.append(proc)
        for proc in servers:
            proc.wait()
        shared = {
            "COMPANION_DATABASE_URL": database_url,
            "COMPANION_REDIS_URL": redis_url,
            "COMPANION_REDIS_PREFIX": f"scale{free_port()}:",
            "COMPANION_MODEL_PATH": str(model),
            "COMPANION_MODEL_SERVERS": json.dumps([p.base_url for p in servers]),
            **(env or {}),
        }
        instances = [app_instance(folder, shared) for _ in range(apps)]
        for proc in instances:
            proc.start(wait=False)
            started.append(proc)
        for proc in instances:
            proc.wait()
        nginx = balancer(folder, instances)
        nginx.start()
        started.append(nginx)
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise
    return Topology(folder, servers, instances, nginx)
