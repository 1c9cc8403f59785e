"""
A live labelling session, stopped and resumed
=============================================

A person labels what the learner asks for, over several days.
:class:`skal.LabelingSession` keeps everything in a directory: the labels
(written to disk before any training on them), the open query, the model's
weights and the random state. Here a simulated labeller answers from
scikit-learn's digits. On "day 1" it labels a label-free first batch (the
session picks it before any label) and two queries,
then receives a third query and stops before answering it (as if the
laptop were closed, or the process killed). On "day 2" the session is
opened again from the directory: the unanswered query comes back unchanged,
no labelled row is ever proposed again, and the model continues from the
saved weights without retraining from scratch. Then the person corrects an
answer: the log keeps both, and the model is trained on the latest.

Run it with ``python examples/run_labeling_session.py``; it takes a few
seconds on a CPU.
"""

import tempfile
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import skal

X, y = load_digits(return_X_y=True)
X = (X / 16).astype(np.float32)
X_pool, X_test, y_pool, y_test = train_test_split(X, y, test_size=300, random_state=0)


def labeller(rows):
    """The person: looks at the images of ``rows`` and answers their labels."""
    return y_pool[rows]


def make_learner():
    net = skal.NeuralNetClassifier(
        skal.nets.MLP, module__hidden_units=(64,), max_epochs=20, lr=3e-3
    )
    return skal.ActiveLearner(
        net, strategy="margin", classes=list(range(10)), random_state=0
    )


directory = Path(tempfile.mkdtemp()) / "digits-session"

# %%
# Day 1: a first labelled set, two answered queries, a third left open.
session = skal.LabelingSession(make_learner(), X_pool, directory)
first = session.query(30)  # before any label: a label-free first batch
session.teach(first, labeller(first))
for _ in range(2):
    rows = session.query(20)
    session.teach(rows, labeller(rows))
open_query = session.query(20)
print(f"day 1: {len(session.labeled_indices_)} rows labelled, "
      f"test accuracy {session.learner_.score(X_test, y_test):.3f}")  # fmt: skip
print(f"day 1: query shown, not answered: {sorted(open_query.tolist())}")
accuracy_day1 = session.learner_.score(X_test, y_test)
del session  # the process ends here

# %%
# What the directory holds: the answers' log (JSON lines), the model's index
# (JSON), ``.npz`` arrays and a ``state_dict`` file; nothing that resuming
# would have to unpickle.
print("files:", sorted(p.name for p in directory.rglob("*") if p.is_file()))

# %%
# Day 2: the session reopens from the directory.
session = skal.LabelingSession(make_learner(), X_pool, directory)
resumed_accuracy = session.learner_.score(X_test, y_test)
print(f"day 2: reopened with {len(session.labeled_indices_)} rows labelled, "
      f"test accuracy {resumed_accuracy:.3f} (the saved model)")  # fmt: skip
rows = session.query(20)
print(f"day 2: the open query comes back unchanged: "
      f"{np.array_equal(rows, open_query)}")  # fmt: skip
session.teach(rows, labeller(rows))
for _ in range(2):
    rows = session.query(20)
    session.teach(rows, labeller(rows))
labelled = session.labeled_indices_
print(f"day 2: {len(labelled)} rows labelled, each once: "
      f"{len(np.unique(labelled)) == len(labelled)}, "
      f"test accuracy {session.learner_.score(X_test, y_test):.3f}")  # fmt: skip
assert resumed_accuracy == accuracy_day1

# %%
# Corrections: the person changes one answer, then changes it back. The log
# keeps every answer; the model trains on the latest ones, from its current
# weights.
row = int(labelled[0])
session.relabel([row], [(labeller([row])[0] + 1) % 10], annotator="second look")
session.relabel([row], labeller([row]), annotator="third look")
print(f"answers for row {row}:",
      [(h["op"], h["label"], h["annotator"]) for h in session.history()
       if h["index"] == row])  # fmt: skip
print(f"model version {session.model_version_}, test accuracy "
      f"{session.learner_.score(X_test, y_test):.3f}")  # fmt: skip
