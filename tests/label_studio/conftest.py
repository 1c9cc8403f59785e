"""Fixtures of the tests against a real Label Studio server.

They run only with ``SKAL_TEST_LABEL_STUDIO=1`` (``make test-label-studio``
sets it, installs Label Studio and Chromium, and runs them); otherwise every
test marked ``label_studio`` is skipped.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

# the pool file is run by the backend process, not imported by pytest
collect_ignore = ["digits_pool.py"]

ENABLED = os.environ.get("SKAL_TEST_LABEL_STUDIO") == "1"
HERE = Path(__file__).resolve().parent
N_IMAGES = 240


def pytest_collection_modifyitems(config, items):
    if ENABLED:
        return
    skip = pytest.mark.skip(
        reason="needs a Label Studio server: run `make test-label-studio`"
    )
    for item in items:
        if "label_studio" in item.keywords:
            item.add_marker(skip)


def write_digits(folder, n):
    """``n`` digits as 32x32 PNG files ``0000.png, ...``; their labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = (X[i].reshape(8, 8) * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels).resize((32, 32), Image.NEAREST).save(
            folder / f"{i:04d}.png"
        )
    return y[:n]


class Server:
    """The Label Studio server of the test session and its image pool."""

    def __init__(self, local, root, pool, labels):
        from skal.label_studio import ChoicesSchema, LabelStudioClient

        self.local = local
        self.url, self.api_key = local.url, local.api_key
        self.root, self.pool, self.labels = root, pool, labels
        self.client = LabelStudioClient(self.url, self.api_key)
        self._schema = ChoicesSchema

    def new_project(self, title):
        from skal.label_studio import ImageFolder, image_classification_config

        project = self.client.create_project(
            title, image_classification_config(range(10))
        )
        tasks = self.client.import_images(
            project, ImageFolder(self.pool).files, document_root=self.root
        )
        return project, tasks

    def answer(self, label):
        from skal.label_studio import image_classification_config

        schema = self._schema.parse(image_classification_config(range(10)))
        return schema.result(str(label))

    def annotations(self, project):
        """``pool row -> label`` of the project's latest annotations."""
        rows = {}
        for task in self.client.annotated_tasks(project):
            kept = [a for a in task["annotations"] if not a["was_cancelled"]]
            if kept:
                latest = max(kept, key=lambda a: (a["updated_at"], a["id"]))
                choice = latest["result"][0]["value"]["choices"][0]
                rows[task["data"]["pool_index"]] = int(choice)
        return rows


class _Running:
    """A server started elsewhere (``SKAL_TEST_LABEL_STUDIO_URL``, ``_KEY``,
    ``_PASSWORD``; its document root in ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``),
    to rerun the tests without waiting for a first start."""

    username = "admin@example.com"

    def __init__(self):
        self.url = os.environ["SKAL_TEST_LABEL_STUDIO_URL"]
        self.api_key = os.environ["SKAL_TEST_LABEL_STUDIO_KEY"]
        self.password = os.environ.get("SKAL_TEST_LABEL_STUDIO_PASSWORD", "")


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    from skal.label_studio import LocalLabelStudio

    if os.environ.get("SKAL_TEST_LABEL_STUDIO_URL"):
        root = Path(os.environ["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"])
        folder = Path(tempfile.mkdtemp(dir=root))
        labels = write_digits(folder, N_IMAGES)
        yield Server(_Running(), root, folder, labels)
        return
    root = tmp_path_factory.mktemp("files")
    labels = write_digits(root / "digits", N_IMAGES)
    local = LocalLabelStudio(root, data_dir=tmp_path_factory.mktemp("ls-data"))
    with local:
        yield Server(local, root, root / "digits", labels)


class BackendProcess:
    """``python -m skal.label_studio serve digits_pool.py`` in a subprocess."""

    def __init__(self, server, project, directory, *, epochs=10, n=20, extra=()):
        from skal.label_studio._local import free_port

        self.server, self.project, self.directory = server, project, directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(
            os.environ,
            SKAL_TEST_POOL=str(server.pool),
            SKAL_TEST_EPOCHS=str(epochs),
            OMP_NUM_THREADS="1",
        )
        self.command = [
            sys.executable,
            "-m",
            "skal.label_studio",
            "serve",
            str(HERE / "digits_pool.py"),
            "--port",
            str(self.port),
            "--url",
            server.url,
            "--api-key",
            server.api_key,
            "--project",
            str(project),
            "--directory",
            str(directory),
            "--document-root",
            str(server.root),
            "--n",
            str(n),
            *extra,
        ]
        self.process = None
        self.log = Path(directory).with_suffix(".log")

    def start(self, timeout=180):
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        return self.wait(lambda s: s["ready"] and s["pushes"] >= 1, timeout)

    def status(self, labels=False):
        import requests

        params = {"labels": 1} if labels else {}
        return requests.get(self.url + "/status", params=params, timeout=10).json()

    def wait(self, condition, timeout=180, labels=False):
        import requests

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the backend exited with {self.process.returncode}:\n"
                    + self.log.read_text()[-3000:]
                )
            try:
                last = self.status(labels=labels)
                if condition(last):
                    return last
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"backend state never matched; last: {last}")

    def wait_idle(self, n_labeled, timeout=180):
        """Every answer recorded and trained on, and its picks pushed."""

        def idle(s):
            return (
                s["ready"]
                and s["queued"] == 0
                and not s["training"]
                and s["n_labeled"] == n_labeled
                and s["model_version"] is not None
                and s["pushed_version"].startswith(f"skal-{s['model_version']}-")
                and set(map(int, s["labels"])).isdisjoint(s["pushed"])
                and s["labels_trained"]
            )

        return self.wait(idle, timeout, labels=True)

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def backend_factory(label_studio, tmp_path):
    started = []

    def make(project, **kwargs):
        backend = BackendProcess(
            label_studio, project, tmp_path / f"session-{project}", **kwargs
        )
        started.append(backend)
        return backend

    yield make
    for backend in started:
        backend.stop()
