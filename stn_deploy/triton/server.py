"""Start and stop a real Triton Inference Server on a model repository.

Which ``tritonserver``: ``--server PATH`` if given, else one on ``PATH`` (a user's Triton
container), else the one set-up unpacked from the ``nvidia-pytriton`` wheel into
``third_party/triton`` (Triton 2.51 with the python backend; it runs on a CPU-only machine).

The python backend starts one stub process per model instance; the stub runs ``model.py``
with the first ``python3`` on the server's PATH and must load that interpreter's own
libpython. So the server gets the python-backend environment (numpy<2 + onnxruntime, made by
set-up; numpy 2 there silently corrupts tensors) first on PATH and its libpython folder on
``LD_LIBRARY_PATH``. The server runs in a session of its own: stopping it stops its stubs
too, and nothing outlives ``stop``.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stn_deploy.errors import UserError

_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_DIR = _ROOT / "third_party" / "triton"
BUNDLED_SERVER = BUNDLED_DIR / "pytriton" / "tritonserver"
BUNDLED_PYTHON_ENV = BUNDLED_DIR / "python-env"
SERVER_ENV = "STN_DEPLOY_TRITONSERVER"
PYTHON_ENV_ENV = "STN_DEPLOY_TRITON_PYTHON_ENV"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ServerOptions:
    """Options of ``TritonServer``.

    Attributes:
        repository: the model repository (``stn-deploy triton`` writes one).
        http_port, grpc_port, metrics_port: ports; defaults Triton's 8000/8001/8002.
        address: interface every endpoint binds; default loopback only.
        server: the ``tritonserver`` binary; default ``$STN_DEPLOY_TRITONSERVER``, ``PATH``,
            then the bundled one.
        python_env: environment for python-backend models (numpy<2, onnxruntime); default
            ``$STN_DEPLOY_TRITON_PYTHON_ENV``, then the bundled one where present.
        log_file: where the server's log goes; default a temporary file.
        ready_timeout_s: how long to wait for ``/v2/health/ready``; default 60 s.
        exit_timeout_s: how long the server may drain in-flight requests on stop; default 5 s.
        models: load only these models of the repository (explicit model control); default all.
        extra_args: more ``tritonserver`` flags (e.g. ``--backend-config=...``).
    """

    repository: Path
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    address: str = LOOPBACK
    server: Path | None = None
    python_env: Path | None = None
    log_file: Path | None = None
    ready_timeout_s: float = 60.0
    exit_timeout_s: int = 5
    models: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerInstall:
    """A ``tritonserver`` and, for the bundled one, its backend and cache folders."""

    binary: Path
    backend_dir: Path | None
    cache_dir: Path | None
    bundled: bool


def find_server(explicit: Path | None = None) -> ServerInstall:
    """The ``tritonserver`` to run (see the module docstring).

    Raises:
        UserError: none found, or ``explicit`` is not an executable file.
    """
    chosen = explicit or (Path(os.environ[SERVER_ENV]) if os.environ.get(SERVER_ENV) else None)
    if chosen is not None:
        if not (chosen.is_file() and os.access(chosen, os.X_OK)):
            raise UserError(f"--server {chosen}: not an executable file")
        return _install(chosen)
    on_path = shutil.which("tritonserver")
    if on_path:
        return _install(Path(on_path))
    bundled = BUNDLED_SERVER / "bin" / "tritonserver"
    if bundled.is_file():
        return _install(bundled)
    raise UserError("no tritonserver found: not on PATH and not set up in third_party/triton "
                    "(run scripts/setup.sh, or give --server PATH)")


def _install(binary: Path) -> ServerInstall:
    root = binary.resolve().parent.parent
    # <root>/bin/tritonserver beside <root>/backends and <root>/caches, as in the bundled
    # server and in Triton's containers (/opt/tritonserver).
    backends, caches = root / "backends", root / "caches"
    bundled = binary.resolve() == (BUNDLED_SERVER / "bin" / "tritonserver").resolve()
    return ServerInstall(binary, backends if backends.is_dir() else None, caches if caches.is_dir() else None, bundled)


#: ``platform`` values of config.pbtxt -> the backend that serves them (Triton's model_config docs).
_PLATFORM_BACKENDS = {"tensorrt_plan": "tensorrt", "onnxruntime_onnx": "onnxruntime",
                      "pytorch_libtorch": "pytorch", "tensorflow_savedmodel": "tensorflow",
                      "tensorflow_graphdef": "tensorflow"}


def server_backends(install: ServerInstall) -> frozenset[str] | None:
    """The backends a server has (the folders of its backend directory); None when unknown."""
    if install.backend_dir is None:
        return None
    return frozenset(p.name for p in install.backend_dir.iterdir() if p.is_dir())


def model_backends(repository: Path) -> dict[str, str]:
    """Model name -> the backend its config.pbtxt asks for, for every model of a repository.

    Raises:
        UserError: a config.pbtxt that Triton's schema rejects.
    """
    from stn_deploy.triton.config import parse_config

    found = {}
    for config_path in sorted(Path(repository).glob("*/config.pbtxt")):
        name = config_path.parent.name
        config = parse_config(config_path.read_text(), name)
        found[name] = config.backend or _PLATFORM_BACKENDS.get(config.platform, config.platform)
    return found


@dataclass(frozen=True)
class ModelSelection:
    """Which models of a repository a server loads, and why it skips the others.

    Attributes:
        load: the models to load; empty = all (the server's backends are unknown).
        skipped: model -> why it is not loaded.
    """

    load: tuple[str, ...]
    skipped: dict[str, str]


def select_models(repository: Path, install: ServerInstall, requested: tuple[str, ...] = ()) -> ModelSelection:
    """The models of ``repository`` that ``install`` has backends for (of ``requested``, when given).

    Raises:
        UserError: a requested model is not in the repository or needs a backend the server
            lacks, or no model of the repository can load (naming ``--model`` and ``--server``).
    """
    needs = model_backends(repository)
    missing = [m for m in requested if m not in needs]
    if missing:
        raise UserError(f"{repository} has no model {', '.join(missing)} (it has: {', '.join(needs) or 'none'})")
    have = server_backends(install)
    if have is None:
        return ModelSelection(tuple(requested), {})
    which = "the bundled tritonserver" if install.bundled else f"{install.binary}"
    have_text = ", ".join(sorted(have)) or "none"
    candidates = list(requested) or list(needs)
    skipped = {m: f"needs the {needs[m]} backend, which {which} lacks (it has: {have_text})"
               for m in candidates if needs[m] not in have}
    if requested and skipped:
        first = next(iter(skipped))
        raise UserError(f"--model {first} {skipped[first]}; serve it with a full Triton (--server PATH)")
    load = tuple(m for m in candidates if m not in skipped)
    if not load:
        loadable = sorted(m for m, b in needs.items() if b in have)
        raise UserError(f"no model of {repository} can load on {which} (it has: {have_text}; the models need "
                        f"{', '.join(sorted(set(needs.values()))) or 'nothing'}): "
                        + (f"serve one with --model {loadable[0]}" if loadable else
                           "write a python variant (stn-deploy triton --serve-as python) or give --server PATH"))
    return ModelSelection(load if skipped or requested else (), skipped)


def python_backend_env(explicit: Path | None = None) -> tuple[Path, Path] | None:
    """(bin folder, libpython folder) of the python-backend environment, or None when there is none.

    Raises:
        UserError: the environment has numpy 2 (the stub would corrupt tensors silently), no
            numpy or no onnxruntime.
    """
    env = explicit or (Path(os.environ[PYTHON_ENV_ENV]) if os.environ.get(PYTHON_ENV_ENV) else None)
    if env is None:
        if not (BUNDLED_PYTHON_ENV / "bin" / "python3").exists():
            return None
        env = BUNDLED_PYTHON_ENV
    python = env / "bin" / "python3"
    if not python.exists():
        raise UserError(f"python-backend environment {env}: no bin/python3")
    probe = ("import sysconfig, numpy, onnxruntime; "
             "print(numpy.__version__); print(sysconfig.get_config_var('LIBDIR'))")
    res = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["?"])[-1]
        raise UserError(f"python-backend environment {env}: needs numpy<2 and onnxruntime ({last})")
    numpy_version, libdir = res.stdout.split()[:2]
    if int(numpy_version.split(".")[0]) >= 2:
        raise UserError(f"python-backend environment {env} has numpy {numpy_version}: Triton's python-backend stub "
                        "corrupts tensors with numpy 2; use an environment with numpy<2")
    return env / "bin", Path(libdir)


def port_free(port: int, address: str = LOOPBACK) -> bool:
    """Whether ``address:port`` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As servers bind: connections of a previous server in TIME_WAIT do not block it,
        # a live listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def free_ports(count: int, address: str = LOOPBACK) -> list[int]:
    """``count`` distinct ports the OS reports free on ``address`` (for tests and benchmarks)."""
    sockets, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((address, 0))
            sockets.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in sockets:
            s.close()
    return ports


def _log_tail(path: Path, lines: int = 4) -> str:
    """The server's error lines (Triton prefixes them with ``E``), else its last lines, joined."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    useful = [ln.strip() for ln in text if ln.strip() and ln.strip()[0] not in "+|"]
    errors = [ln for ln in useful if re.match(r"^E\d{4} ", ln) or ln.startswith("error:")]
    picked = errors[-lines:] if errors else useful[-lines:]
    # "E1201 20:07:27.351283 23924 model_lifecycle.cc:641] msg" -> "msg"
    return " | ".join(re.sub(r"^[EWI]\d{4} [\d:.]+ \d+ \S+\] ", "", ln) for ln in picked) or "(empty log)"


class TritonServer:
    """A running ``tritonserver``; use as a context manager or call ``start``/``stop``.

    Example::

        with TritonServer(ServerOptions(repo, http_port=p1, grpc_port=p2, metrics_port=p3)) as server:
            print(server.grpc_url)
    """

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.process: subprocess.Popen | None = None
        self.install: ServerInstall | None = None
        self._own_log = options.log_file is None
        self.log_path = options.log_file or Path(tempfile.mkstemp(prefix="tritonserver-", suffix=".log")[1])
        #: which models ``start`` loads and which it skipped (set by ``command``)
        self.selection = ModelSelection((), {})

    @property
    def http_url(self) -> str:
        return f"{self.options.address}:{self.options.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.options.address}:{self.options.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.options.address}:{self.options.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> tuple[list[str], dict[str, str]]:
        """The argv and environment the server starts with."""
        o = self.options
        repo = Path(o.repository).absolute()
        if not repo.is_dir():
            raise UserError(f"{repo}: no such model repository")
        ports = (o.http_port, o.grpc_port, o.metrics_port)
        if len(set(ports)) != 3:
            raise UserError(f"HTTP, gRPC and metrics ports must differ (got {', '.join(map(str, ports))})")
        for label, port in zip(("HTTP", "gRPC", "metrics"), ports):
            if not 0 < port < 65536:
                raise UserError(f"{label} port {port} is outside 1..65535")
            if not port_free(port, o.address):
                raise UserError(f"{label} port {port} on {o.address} is in use; pick another (--{label.lower()}-port)")
        self.install = find_server(o.server)
        argv = [str(self.install.binary), f"--model-repository={repo}",
                f"--http-address={o.address}", f"--http-port={o.http_port}",
                f"--grpc-address={o.address}", f"--grpc-port={o.grpc_port}",
                f"--metrics-address={o.address}", f"--metrics-port={o.metrics_port}",
                "--allow-gpu-metrics=false", f"--exit-timeout-secs={o.exit_timeout_s}"]
        if self.install.backend_dir is not None:
            argv.append(f"--backend-directory={self.install.backend_dir}")
        if self.install.cache_dir is not None:
            argv.append(f"--cache-directory={self.install.cache_dir}")
        self.selection = select_models(repo, self.install, o.models)
        if self.selection.load:
            argv.append("--model-control-mode=explicit")
            argv += [f"--load-model={m}" for m in self.selection.load]
        argv += list(o.extra_args)
        env = dict(os.environ)
        found = python_backend_env(o.python_env)
        if found is not None:
            bin_dir, libdir = found
            env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
            env["LD_LIBRARY_PATH"] = f"{libdir}{os.pathsep}{env.get('LD_LIBRARY_PATH', '')}".rstrip(os.pathsep)
            env.pop("PYTHONPATH", None)  # the stub must not see the project's numpy-2 packages
            env.pop("VIRTUAL_ENV", None)
            env.pop("PYTHONHOME", None)
        return argv, env

    def start(self) -> TritonServer:
        """Start the server and wait until it is ready.

        Raises:
            UserError: ports in use, no server, or a server that exited or did not become
                ready in time (with the last lines of its log).
        """
        if self.process is not None:
            raise RuntimeError("server already started")
        argv, env = self.command()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)
        _LIVE.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.options.ready_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        proc = self.process
        assert proc is not None
        while True:
            code = proc.poll()
            if code is not None:
                tail = _log_tail(self.log_path)
                hint = ""
                if self.install is not None and self.install.bundled and "unable to find backend" in tail:
                    hint = " (the bundled server has only the python backend: serve the *-python models with --model)"
                raise UserError(f"tritonserver exited with code {code} before it was ready: {tail}{hint}")
            try:
                with urllib.request.urlopen(url, timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise UserError(f"tritonserver not ready after {self.options.ready_timeout_s:.0f} s: "
                                f"{_log_tail(self.log_path)}")
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the server alone, as a crash would (its stubs notice and exit; ``stop`` reaps them)."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self, timeout_s: float | None = None) -> None:
        """SIGTERM the server, wait for it (default its exit timeout + 10 s), then SIGKILL
        whatever is left of its session (stubs included)."""
        proc = self.process
        if proc is None:
            return
        wait = timeout_s if timeout_s is not None else self.options.exit_timeout_s + 10
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        _kill_session(proc.pid)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self.process = None
        _LIVE.discard(self)

    def session_pids(self) -> list[int]:
        """Live processes of the server's session (the server and its stubs)."""
        return _session_members(self.process.pid) if self.process else []

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def close_log(self) -> None:
        """Remove the server log when it was a temporary file."""
        if self._own_log:
            Path(self.log_path).unlink(missing_ok=True)


def _session_members(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields: state ppid pgrp session ...; zombies are already dead
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


def _kill_session(sid: int) -> None:
    for _ in range(50):
        members = _session_members(sid)
        if not members:
            return
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


_LIVE: set[TritonServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop(timeout_s=5)


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def serve(options: ServerOptions, on_ready: Callable[[TritonServer], None] | None = None) -> None:
    """Run the server in the foreground until SIGINT/SIGTERM, then stop it and its stubs.

    A signal while the server is still starting stops it too and raises KeyboardInterrupt.

    Raises:
        UserError: it did not come up (see ``TritonServer.start``) or exited by itself (with
            the last lines of its log).
    """
    server = TritonServer(options)
    signals = (signal.SIGINT, signal.SIGTERM)
    # SIGTERM interrupts like Ctrl-C, so that no signal leaves the server (its own session) behind.
    previous = {sig: signal.signal(sig, _interrupt) for sig in signals}
    try:
        server.start()
        if on_ready is not None:
            on_ready(server)
        try:
            while server.alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            return
        code = server.process.returncode if server.process else None
        raise UserError(f"tritonserver exited with code {code}: {_log_tail(server.log_path)}")
    finally:
        for sig in signals:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
