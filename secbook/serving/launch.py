"""Start a server: in this process (``serve``, what ``python -m secbook serve`` runs) or as a child process
with bounded waits (``ServerProcess``, what the tests and the chapter use — ours or ``transformers serve``).

A child process is always bound to 127.0.0.1 on a port the OS picks, waited for by polling ``/health`` for at
most ``start_timeout`` seconds, and stopped with SIGTERM (then SIGKILL after ``stop_timeout``) — also when the
``with`` block fails — so a test or a notebook never leaves a server behind.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _die_with_parent() -> None:
    """In the child, before exec (Linux): ask the kernel for SIGTERM when the parent dies, so a server started by
    a test or a notebook kernel that crashes does not outlive it."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _kv_blocks(shape_bytes_per_token: int, block_size: int, kv_memory_mb: float) -> int:
    return max(1, int(kv_memory_mb * 2**20 // (shape_bytes_per_token * block_size)))


def build_engine(model, policy: str = "continuous", max_batch: int = 8, max_queue: int = 64,
                 block_size: int = 16, kv_blocks: int | None = None, kv_memory_mb: float = 256,
                 prefill_chunk: int = 256, max_model_len: int | None = None, runner: str = "auto"):
    """An :class:`~secbook.serving.engine.Engine` over a paged cache sized by ``kv_blocks`` or, if not given,
    by ``kv_memory_mb`` megabytes; ``runner`` as in :func:`~secbook.serving.runner.make_runner`."""
    from .blocks import CacheShape
    from .engine import Engine
    from .runner import make_runner

    if kv_blocks is None:
        dtype = next(model.parameters()).dtype
        kv_blocks = _kv_blocks(CacheShape.from_config(model.config, dtype).bytes_per_token, block_size, kv_memory_mb)
    return Engine(make_runner(model, kv_blocks, block_size, runner), policy=policy, max_batch=max_batch,
                  max_queue=max_queue, prefill_chunk=prefill_chunk, max_model_len=max_model_len)


def serve(model: str = "tiny", host: str = "127.0.0.1", port: int = 8000, served_name: str | None = None,
          threads: int | None = None, max_body_bytes: int = 1 << 20, default_max_tokens: int = 256,
          shutdown_timeout: float = 30.0, log_level: str = "warning", device: str = "cpu", dtype=None,
          **engine_kw) -> int:
    """Load ``model``, build the engine and run the OpenAI-compatible server until SIGTERM/SIGINT. Prints one
    line ``secbook serve: <name> on http://host:port`` (flushed) as soon as the port is bound; with
    ``port=0`` the OS picks a free port and that line says which."""
    import torch
    import uvicorn

    from ..models import load
    from .server import State, build_app

    if threads:
        torch.set_num_threads(threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    m, tok = load(model, device=device, dtype=dtype)
    engine = build_engine(m, **engine_kw)
    state = State(engine, tok, served_name or model, max_body_bytes, default_max_tokens, model=m)
    app = build_app(state)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    stats = engine.stats()
    print(f"secbook serve: {state.model_name} on http://{host}:{bound} ({type(engine.runner).__name__}, "
          f"policy {stats['policy']}, max batch "
          f"{stats['max_batch']}, max queue {stats['max_queue']}, {stats['kv_blocks_total']} KV blocks of "
          f"{stats['kv_block_size']} tokens, context {engine.max_model_len})", flush=True)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=shutdown_timeout, lifespan="on")
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal it caught once it has shut down; exit 0 then, the drain went as planned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.run(sockets=[sock])
    except SystemExit:
        pass
    s = engine.stats()
    print(f"secbook serve: stopped after {s['completed']} completed, {s['cancelled']} cancelled, "
          f"{s['failed']} failed, {s['rejected']} rejected requests", flush=True)
    return 0


@contextlib.contextmanager
def in_thread(state, host: str = "127.0.0.1", shutdown_timeout: float = 5.0):
    """Run the app of ``state`` (a :class:`~secbook.serving.server.State`) with uvicorn in a thread of this
    process on a free port of ``host``; yields the base URL; stops it (bounded) on exit. For tests that want
    to reach inside the engine while it serves."""
    import threading

    import uvicorn

    from .server import build_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    url = f"http://{host}:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(build_app(state), log_level="error", lifespan="on",
                                           timeout_graceful_shutdown=shutdown_timeout))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    th.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not th.is_alive():
                raise RuntimeError("the in-thread server did not start")
            time.sleep(0.02)
        yield url
    finally:
        server.should_exit = True
        th.join(shutdown_timeout + 10)
        sock.close()


def get_json(url: str, timeout: float = 5.0):
    """GET ``url`` and parse JSON (standard library only: usable before any client is set up)."""
    import json

    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def get_text(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


class ServerProcess:
    """A server in a child process, on 127.0.0.1, started and stopped with bounded waits.

    ``ServerProcess.secbook("tiny", policy="static")`` runs ``python -m secbook serve``;
    ``ServerProcess.transformers(path)`` runs ``transformers serve`` with continuous batching. Use it as a
    context manager; ``url`` is the base URL, ``log()`` the process's output so far."""

    def __init__(self, argv: list[str], port: int, start_timeout: float = 120.0, stop_timeout: float = 30.0,
                 env: dict | None = None, name: str = "server"):
        self.argv, self.port, self.name = argv, port, name
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.url = f"http://127.0.0.1:{port}"
        self._log = tempfile.NamedTemporaryFile("w+", prefix="secbook-serve-", suffix=".log", delete=False)
        full_env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
                    "TOKENIZERS_PARALLELISM": "false", **(env or {})}
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
                                     cwd=str(Path(__file__).resolve().parents[2]), preexec_fn=_die_with_parent)
        self.returncode: int | None = None

    @staticmethod
    def free_port() -> int:
        """A port that was free a moment ago (the server binds it right after)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    @classmethod
    def secbook(cls, model: str = "tiny", threads: int | None = None, **options) -> "ServerProcess":
        """``python -m secbook serve --model MODEL --host 127.0.0.1 --port P`` plus ``--option value`` for each
        keyword (``max_batch=4`` → ``--max-batch 4``)."""
        port = cls.free_port()
        argv = [sys.executable, "-m", "secbook", "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port)]
        for k, v in options.items():
            argv += [f"--{k.replace('_', '-')}", str(v)]
        env = {"OMP_NUM_THREADS": str(threads)} if threads else None
        if threads:
            argv += ["--threads", str(threads)]
        return cls(argv, port, env=env, name=f"secbook serve {model}")

    @classmethod
    def transformers(cls, model_path: str, continuous_batching: bool = True, threads: int | None = None,
                     extra: list[str] = ()) -> "ServerProcess":
        """``transformers serve`` (transformers' own OpenAI-compatible server) on the same model folder."""
        port = cls.free_port()
        code = ("import sys; from transformers.cli.transformers import main; "
                "sys.argv = ['transformers'] + sys.argv[1:]; main()")
        argv = [sys.executable, "-c", code, "serve", str(model_path), "--host", "127.0.0.1", "--port", str(port),
                "--device", "cpu", "--dtype", "float32"]
        if continuous_batching:
            argv.append("--continuous-batching")
        argv += list(extra)
        env = {"OMP_NUM_THREADS": str(threads)} if threads else None
        return cls(argv, port, env=env, name="transformers serve")

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def wait_ready(self) -> "ServerProcess":
        """Poll ``/health`` until it answers 200; RuntimeError (with the log) if the process dies or the time
        runs out."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with code {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer /health within {self.start_timeout} s:\n{self.log()[-3000:]}")

    def stop(self) -> int:
        """SIGTERM, wait up to ``stop_timeout`` s, then SIGKILL; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.returncode = self.proc.returncode
        self._log.close()
        return self.returncode

    def __enter__(self) -> "ServerProcess":
        try:
            return self.wait_ready()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)


class MetricsSampler:
    """Read a secbook server's ``/metrics`` every ``interval`` seconds in a thread while a ``with`` block runs;
    ``samples`` is a list of ``(wall-clock time.time(), {metric: value})``. (Queue lengths and KV-cache bytes
    over time: what the server holds, next to what the client measures.)"""

    def __init__(self, url: str, interval: float = 0.1):
        self.url, self.interval = url.rstrip("/") + "/metrics", interval
        self.samples: list[tuple[float, dict]] = []
        self._stop = None
        self._thread = None

    def _run(self) -> None:
        from .server import parse_metrics

        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), parse_metrics(get_text(self.url, timeout=2))))
            except OSError:
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> "MetricsSampler":
        import threading

        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)

    def frame(self, start: float | None = None, end: float | None = None):
        """The samples taken between wall-clock ``start`` and ``end`` as a DataFrame (column ``t``: time.time())."""
        import pandas as pd

        rows = [{"t": t, **m} for t, m in self.samples
                if (start is None or t >= start) and (end is None or t <= end)]
        return pd.DataFrame(rows)
