"""
Labelling in Label Studio, skal choosing what comes next
========================================================

A whole active-learning loop through a real Label Studio server: the pool
is a folder of images (digits written as PNG files), Label Studio serves
them to an annotator, and :func:`skal.label_studio.sync` pulls the answers
into a :class:`skal.LabelingSession`, trains, and pushes skal's next picks
so that Label Studio's label stream serves them in skal's order.

The annotator is simulated: it asks Label Studio for the next task
(``/api/projects/{id}/next``, what the "Label All Tasks" button shows) and
submits the true class through the API, as a person's submit would.
Beside it, the same learner runs the same loop in-process (``query`` then
``teach``); with the same seeds, both pick the same images, round after
round.

This example needs a Label Studio installation (``make label-studio``
installs one into ``~/.cache/skal/label-studio-venv``); it starts a private
server on 127.0.0.1 with its data in a temporary folder and stops it at
the end. It is not run when the documentation is built. Run it with
``python examples/label_studio_loop.py`` (about two minutes, most of it
Label Studio's first start).
"""

import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

import skal
from skal.label_studio import (
    ChoicesSchema,
    ImageFolder,
    LabelStudioClient,
    LocalLabelStudio,
    image_classification_config,
    sync,
)

N_POOL, N_ROUNDS, BATCH = 300, 5, 10

# %%
# The pool: digits as 32x32 PNG files in a folder; the rest is a test set.
X, y = load_digits(return_X_y=True)
root = Path(tempfile.mkdtemp()).resolve()
for name, rows in (("pool", range(N_POOL)), ("test", range(N_POOL, len(X)))):
    (root / name).mkdir()
    for i in rows:
        pixels = (X[i].reshape(8, 8) * 255 / 16).astype(np.uint8)
        image = Image.fromarray(pixels).resize((32, 32), Image.NEAREST)
        image.save(root / name / f"{i:04d}.png")
pool = ImageFolder(root / "pool", preload=True)
test = ImageFolder(root / "test", preload=True)
y_pool, y_test = y[:N_POOL], y[N_POOL:]


def make_learner():
    net = skal.NeuralNetClassifier(
        skal.nets.MLP,
        module__hidden_units=(64,),
        max_epochs=30,
        lr=3e-3,
        train_split=None,
        verbose=0,
    )
    return skal.ActiveLearner(
        net, strategy="margin", classes=list(range(10)), random_state=0
    )


def accuracy(session):
    return float(np.mean(session.learner_.predict(test) == y_test))


# %%
# Label Studio: a project with one image and ten classes to pick from; one
# task per image, served from the folder through Label Studio's local
# storage, each carrying its pool row as ``pool_index``.
with LocalLabelStudio(root, data_dir=root / "label-studio") as server:
    client = LabelStudioClient(server.url, server.api_key)
    config = image_classification_config(range(10))
    schema = ChoicesSchema.parse(config)
    project = client.create_project("digits", config)
    client.import_images(project, pool.files, document_root=root)

    in_studio = skal.LabelingSession(make_learner(), pool, root / "studio")
    in_process = skal.LabelingSession(make_learner(), pool, root / "in-process")
    picks = None
    for round_ in range(N_ROUNDS + 1):
        # pull the answers, train, push the next picks
        report = sync(in_studio, server.url, server.api_key, project, n=BATCH)
        if picks is not None:
            in_process.teach(picks, y_pool[picks])
            print(
                f"round {round_}: {len(in_studio.labeled_indices_)} labelled, "
                f"test accuracy {accuracy(in_studio):.3f} (in-process "
                f"{accuracy(in_process):.3f})"
            )
        if round_ == N_ROUNDS:
            break
        picks = in_process.query(BATCH)
        # the simulated annotator labels what Label Studio serves
        served = []
        for _ in range(BATCH):
            task = client.next_task(project)
            row = task["data"]["pool_index"]
            served.append(row)
            client.annotate(task["id"], schema.result(str(y_pool[row])))
        print(
            f"round {round_ + 1}: Label Studio served skal's picks in skal's "
            f"order: {served == report.pushed}; same picks as in-process: "
            f"{served == picks.tolist()}"
        )
        assert served == report.pushed == picks.tolist()
