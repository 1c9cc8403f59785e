"""Start and stop a Label Studio server on this machine (tests, examples)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import requests

#: where ``make test-label-studio`` installs Label Studio
DEFAULT_VENV = Path.home() / ".cache" / "skal" / "label-studio-venv"

#: the environment a local Label Studio needs to work with a local skal backend
LOCAL_ENVIRONMENT = {
    # serve image files from a local folder (/data/local-files/?d=...)
    "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
    # Label Studio refuses webhooks and ML backends on 127.0.0.0/8 unless
    # these are off (they guard a hosted server against requests to its own
    # network)
    "SSRF_PROTECTION_ENABLED": "false",
    "ML_BLOCK_LOCAL_IP": "false",
    # bulk prediction imports update the imported tasks' counters only,
    # instead of every task of the project (0.2-0.5 s instead of 5.3 s for
    # 100 predictions in a project of 10,000 tasks)
    "fflag_fix_back_4620_memory_efficient_predictions_import_08012025_short": "true",
    "COLLECT_ANALYTICS": "false",
}


def find_label_studio(executable=None) -> str:
    """The ``label-studio`` command: given, ``$SKAL_LABEL_STUDIO``, the cached
    environment, or on the ``PATH``."""
    candidates = [
        executable,
        os.environ.get("SKAL_LABEL_STUDIO"),
        str(DEFAULT_VENV / "bin" / "label-studio"),
        shutil.which("label-studio"),
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise FileNotFoundError(
        "label-studio is not installed: run `make label-studio` (it installs "
        f"label-studio into {DEFAULT_VENV}) or set SKAL_LABEL_STUDIO"
    )


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalLabelStudio:
    """A Label Studio server on 127.0.0.1 with its data in a scratch folder.

    It runs with the switches a local skal backend needs (see
    ``LOCAL_ENVIRONMENT``), an admin user and a legacy API token. Use it as
    a context manager; the server is stopped (its process group killed) on
    exit.

    Parameters
    ----------
    document_root : path-like
        The folder Label Studio may serve local files from (images).
    data_dir : path-like, default=None
        Where its sqlite database lives; a new temporary folder when None.
    port : int, default=None
        A free port when None.
    executable : str, default=None
        The ``label-studio`` command (see :func:`find_label_studio`).
    log : path-like, default=None
        File receiving the server's output (``<data_dir>/server.log`` when
        None).

    Attributes
    ----------
    url : str
        The server's address.
    api_key : str
        A legacy API token of the admin user.
    username, password : str
        The admin user's login.

    Examples
    --------
    The switches it starts Label Studio with:

    >>> from skal.label_studio._local import LOCAL_ENVIRONMENT as env
    >>> env["ML_BLOCK_LOCAL_IP"], env["SSRF_PROTECTION_ENABLED"]
    ('false', 'false')

    With Label Studio installed (``make label-studio``):

    >>> from skal.label_studio import LocalLabelStudio
    >>> with LocalLabelStudio("/path/to/images") as server:  # doctest: +SKIP
    ...     print(server.url, server.api_key)
    """

    def __init__(
        self, document_root, *, data_dir=None, port=None, executable=None, log=None
    ):
        self.document_root = Path(document_root).resolve()
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="label-studio-"))
        self.port = port or free_port()
        self.executable = find_label_studio(executable)
        self.url = f"http://127.0.0.1:{self.port}"
        self.username = "admin@example.com"
        self.password = "skal-" + secrets.token_hex(8)
        token_file = self.data_dir / "skal-token"
        if token_file.exists():  # the user and its token live in the database
            self.password, self.api_key = token_file.read_text().split()
        else:
            self.api_key = secrets.token_hex(20)
        self.log = Path(log) if log else self.data_dir / "server.log"
        self.process = None
        self.startup_s = None

    def environment(self) -> dict:
        """The server's environment: this process's, with the local switches.

        Returns
        -------
        env : dict
        """
        env = dict(os.environ)
        env.update(LOCAL_ENVIRONMENT)
        env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] = str(self.document_root)
        env["LABEL_STUDIO_BASE_DATA_DIR"] = str(self.data_dir)
        return env

    def start(self, timeout=300.0) -> LocalLabelStudio:
        """Start the server and wait until it answers ``/health``.

        Parameters
        ----------
        timeout : float, default=300.0
            Seconds to wait (a first start migrates a new database: about
            half a minute to two minutes on two busy cores).

        Returns
        -------
        self : LocalLabelStudio
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [
            self.executable,
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--username",
            self.username,
            "--password",
            self.password,
            "--user-token",
            self.api_key,
            "--enable-legacy-api-token",
        ]
        started = time.monotonic()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                command,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        (self.data_dir / "skal-token").write_text(f"{self.password} {self.api_key}")
        try:
            self._wait_healthy(started, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, started, timeout):
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"label-studio exited with {self.process.returncode}; see "
                    f"{self.log}"
                )
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    self.startup_s = time.monotonic() - started
                    return
            except requests.RequestException:  # not listening yet, or busy
                pass
            time.sleep(0.5)
        raise TimeoutError(
            f"label-studio did not answer within {timeout:g} s; see {self.log}"
        )

    def stop(self):
        """Stop the server (its whole process group)."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(15)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
