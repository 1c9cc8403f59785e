"""Latencies of skal's Label Studio backend, on a CPU, against a real server.

For pools of 1,000 and 10,000 images (digits written as 32x32 PNG files,
each a scikit-learn digit with a little noise so that every file differs),
it starts Label Studio (``skal.label_studio.LocalLabelStudio``), imports the
pool as tasks, starts ``python -m skal.label_studio serve`` and annotates
through Label Studio's API what its label stream serves, as a person's
submit does. The backend stamps each answer when its webhook arrives, when
it is durable in the session's log, when a model trained on it is
committed and when Label Studio serves the new order; latencies are taken
from the moment the annotation request is sent:

- annotation -> webhook: Label Studio has saved the annotation and its
  webhook reached the backend;
- annotation -> durable: the answer is in the session's log (fsync'd);
- annotation -> retrained: a model trained on it is committed;
- retrain -> order updated: the new picks are imported into Label Studio
  and the project's ``model_version`` points at them.

"one by one" waits for each push before the next annotation; "burst" sends
5 annotations back to back (recorded while the model trains, then trained
on together).

Usage (Label Studio installed by ``make label-studio``)::

    python benchmarks/label_studio_latency.py                # 1,000 and 10,000
    python benchmarks/label_studio_latency.py --sizes 1000 --answers 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image
from sklearn.datasets import load_digits

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import print_table  # noqa: E402

from skal.label_studio import (  # noqa: E402
    ChoicesSchema,
    ImageFolder,
    LabelStudioClient,
    LocalLabelStudio,
    image_classification_config,
)
from skal.label_studio._local import free_port  # noqa: E402

POOL_FILE = textwrap.dedent(
    """
    import os
    import skal
    from skal.label_studio import ImageFolder

    pool = ImageFolder(os.environ["SKAL_BENCH_POOL"], preload=True)
    learner = skal.ActiveLearner(
        skal.NeuralNetClassifier(
            skal.nets.MLP, module__hidden_units=(64,), max_epochs=10, lr=3e-3,
            train_split=None, verbose=0,
        ),
        strategy="margin", classes=list(range(10)), random_state=0,
    )
    """
)


def write_pool(folder, n, seed=0):
    X, y = load_digits(return_X_y=True)
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = np.empty(n, dtype=int)
    for i in range(n):
        j = i % len(X)
        noisy = X[j] * 255 / 16 + rng.normal(0, 8, 64)
        pixels = np.clip(noisy, 0, 255).astype(np.uint8).reshape(8, 8)
        Image.fromarray(pixels).resize((32, 32), Image.NEAREST).save(
            folder / f"{i:05d}.png"
        )
        labels[i] = y[j]
    return labels


def status(url):
    return requests.get(url + "/status", params={"labels": 1}, timeout=30).json()


def wait(url, condition, process, timeout=900):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the backend exited with {process.returncode}")
        try:
            state = status(url)
            if condition(state):
                return state
        except requests.RequestException:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"backend at {url} never got there")


def idle(n_labeled):
    def check(s):
        return (
            s["ready"]
            and s["queued"] == 0
            and not s["training"]
            and s["n_labeled"] == n_labeled
            and s["labels_trained"]
            and s["pushed_version"].startswith(f"skal-{s['model_version']}-")
        )

    return check


def run_size(server, root, n_pool, n_answers, n_burst):
    client = LabelStudioClient(server.url, server.api_key)
    folder = root / f"pool{n_pool}"
    started = time.perf_counter()
    labels = write_pool(folder, n_pool)
    write_s = time.perf_counter() - started
    schema = ChoicesSchema.parse(image_classification_config(range(10)))
    project = client.create_project(
        f"latency {n_pool}", image_classification_config(range(10))
    )
    started = time.perf_counter()
    client.import_images(project, ImageFolder(folder).files, document_root=root)
    import_s = time.perf_counter() - started
    pool_file = root / f"pool{n_pool}.py"
    pool_file.write_text(POOL_FILE)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, SKAL_BENCH_POOL=str(folder), OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "skal.label_studio", "serve", str(pool_file),
        "--port", str(port), "--url", server.url, "--api-key", server.api_key,
        "--project", str(project), "--directory", str(root / f"session{n_pool}"),
        "--n", "100", "--document-root", str(root),
    ]  # fmt: skip
    log = open(root / f"backend{n_pool}.log", "ab")
    started = time.perf_counter()
    backend = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait(url, lambda s: s["ready"] and s["pushes"] >= 1, backend)
        startup_s = time.perf_counter() - started
        rows, sent = [], {}

        def annotate():
            task = client.next_task(project)
            row = task["data"]["pool_index"]
            sent[row] = time.time()
            client.annotate(task["id"], schema.result(str(labels[row])))
            rows.append(row)
            return row

        one_by_one = []
        for _ in range(n_answers):
            row = annotate()
            state = wait(url, idle(len(rows)), backend)
            one_by_one.append((row, state["timings"][str(row)]))
        fits_before = state["fits"]
        burst = [annotate() for _ in range(n_burst)]
        state = wait(url, idle(len(rows)), backend)
        burst_fits = state["fits"] - fits_before
        burst_timings = [(row, state["timings"][str(row)]) for row in burst]
    finally:
        backend.terminate()
        backend.wait(60)
        log.close()

    def ms(pairs, a, b):
        values = [
            (t[b] - (sent[r] if a == "sent" else t[a])) * 1000
            for r, t in pairs
            if b in t and (a == "sent" or a in t)
        ]
        return f"{np.median(values):.0f} / {np.max(values):.0f}" if values else "-"

    out = []
    for mode, pairs in (("one by one", one_by_one), ("burst of 5", burst_timings)):
        out.append(
            {
                "pool": n_pool,
                "mode": mode,
                "answers": len(pairs),
                "-> webhook ms": ms(pairs, "sent", "received"),
                "-> durable ms": ms(pairs, "sent", "recorded"),
                "-> retrained ms": ms(pairs, "sent", "trained"),
                "retrain -> LS order ms": ms(pairs, "trained", "pushed"),
                "trainings": len(pairs) if mode == "one by one" else burst_fits,
            }
        )
    setup = {
        "pool": n_pool,
        "write PNGs s": f"{write_s:.1f}",
        "import tasks s": f"{import_s:.1f}",
        "backend start to first push s": f"{startup_s:.1f}",
    }
    return out, setup


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--answers", type=int, default=8)
    parser.add_argument("--burst", type=int, default=5)
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="skal-ls-bench-")).resolve()
    with LocalLabelStudio(root, data_dir=root / "label-studio") as server:
        print(f"Label Studio started in {server.startup_s:.1f} s", flush=True)
        rows, setups = [], []
        for size in args.sizes:
            out, setup = run_size(server, root, size, args.answers, args.burst)
            rows += out
            setups.append(setup)
    print("median / max over the answers, milliseconds from the annotation request")
    print_table(rows, list(rows[0]))
    print()
    print_table(setups, list(setups[0]))


if __name__ == "__main__":
    main()
