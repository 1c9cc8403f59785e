"""skal.label_studio without a server: configuration, pools, reconciliation.

The tests against a real Label Studio server are in tests/label_studio
(``make test-label-studio``). Here Label Studio's answers are given as the
JSON its export and webhooks send, to a real LabelingSession.
"""

import time

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

import skal
from skal.label_studio import (
    ChoicesSchema,
    ImageFolder,
    LabelStudioClient,
    _backend,
    image_classification_config,
)
from skal.label_studio._sync import SyncReport, _Binding

CONFIG = image_classification_config(range(10))
SCHEMA = ChoicesSchema.parse(CONFIG)


class FakeLabelStudio:
    """What the code under test asks of Label Studio, answered from memory."""

    def __init__(self, *args, **kwargs):
        self.tasks = []  # the export of annotated tasks
        self.predictions = []
        self.settings = {"label_config": CONFIG, "model_version": ""}
        self.deleted = []

    def project(self, project):
        return dict(self.settings)

    def annotated_tasks(self, project):
        return self.tasks

    def task_ids(self, project):
        return {i: 1000 + i for i in range(60)}

    def import_predictions(self, project, predictions):
        self.predictions.append(predictions)
        return len(predictions)

    def update_project(self, project, **fields):
        self.settings.update(fields)

    def delete_model_version(self, project, version):
        self.deleted.append(version)

    def order_views_by_score(self, project):
        self.ordered = True
        return 1


def annotation(id_, label, updated="2026-01-01T00:00:00Z", cancelled=False, by=1):
    return {
        "id": id_,
        "result": [] if label is None else SCHEMA.result(str(label)),
        "was_cancelled": cancelled,
        "updated_at": updated,
        "completed_by": by,
    }


def task(row, *annotations):
    return {
        "id": 1000 + row,
        "data": {"pool_index": row},
        "annotations": list(annotations),
    }


@pytest.fixture
def digits():
    X, y = load_digits(return_X_y=True)
    return (X[:60] / 16).astype(np.float32), y[:60]


def make_session(X, directory):
    learner = skal.ActiveLearner(
        LogisticRegression(max_iter=200), classes=list(range(10)), random_state=0
    )
    return skal.LabelingSession(learner, X, directory)


def test_choices_schema_reads_the_labelling_configuration():
    assert SCHEMA.from_name == "label" and SCHEMA.to_name == "image"
    assert SCHEMA.values == tuple(str(i) for i in range(10))
    assert SCHEMA.value_of(SCHEMA.result("7")) == "7"
    assert SCHEMA.value_of([]) is None
    with pytest.raises(ValueError, match="exactly one <Choices> tag, found 0"):
        ChoicesSchema.parse('<View><Image name="i" value="$i"/></View>')
    two = CONFIG.replace("</View>", CONFIG[6:-7] + "</View>")
    with pytest.raises(ValueError, match="found 2"):
        ChoicesSchema.parse(two)
    with pytest.raises(ValueError, match="not XML"):
        ChoicesSchema.parse("<View>")
    with pytest.raises(ValueError, match="distinct"):
        image_classification_config(["a", "a"])
    assert ChoicesSchema.parse(image_classification_config(['a"<b'])).values == (
        'a"<b',
    )


def test_client_checks_its_arguments():
    with pytest.raises(ValueError, match="url must be"):
        LabelStudioClient("localhost:8080", "key")
    with pytest.raises(ValueError, match="api_key must be"):
        LabelStudioClient("http://localhost:8080", "")
    client = LabelStudioClient("http://localhost:8080/", "k" * 40)
    assert client.url == "http://localhost:8080"
    with pytest.raises(TypeError, match="project must be"):
        client.project(1.5)
    with pytest.raises(ValueError, match="positive project id"):
        client.project(0)


def test_image_folder_rows_follow_the_sorted_files(tmp_path):
    values = [30, 10, 20]
    for name, value in zip(["b.png", "c.png", "a.png"], values):
        Image.fromarray(np.full((4, 6), value, np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    pool = ImageFolder(tmp_path)
    assert [f.name for f in pool.files] == ["a.png", "b.png", "c.png"]
    assert pool[0].shape == (1, 4, 6)
    assert [round(float(pool[i][0, 0, 0]) * 255) for i in range(3)] == [20, 30, 10]
    rgb = ImageFolder(tmp_path, mode="RGB", preload=True)
    assert rgb[1].shape == (3, 4, 6)
    with pytest.raises(ValueError, match="no file in"):
        ImageFolder(tmp_path, "*.jpg")
    with pytest.raises(ValueError, match="mode must be"):
        ImageFolder(tmp_path, mode="CMYK")
    with pytest.raises(ValueError, match="existing folder"):
        ImageFolder(tmp_path / "missing")


def test_reconcile_makes_the_session_follow_label_studio(digits, tmp_path):
    X, y = digits
    session = make_session(X, tmp_path / "s")
    binding = _Binding(session, FakeLabelStudio(), 1)
    tasks = [
        task(5, annotation(3, y[5])),
        task(2, annotation(1, y[2])),
        # the latest of two annotations wins; a skipped one does not count
        task(
            7, annotation(2, 0, "2026-01-01T00:00:00Z"), annotation(4, 1, "2026-01-02")
        ),
        task(9, annotation(5, None, cancelled=True)),
        {"id": 1, "data": {"image": "x"}, "annotations": [annotation(6, 1)]},
    ]
    report = SyncReport()
    assert binding.reconcile(session, tasks, report)
    # taught in the order first annotated: rows 2 (id 1), 7 (id 2), 5 (id 3)
    assert report.taught == [2, 7, 5]
    assert session.labeled_indices_.tolist() == [2, 7, 5]
    assert session.labels_.tolist() == [y[2], 1, y[5]]
    assert session.history()[0]["annotator"] == "label-studio:1"
    # nothing changed: nothing recorded
    n_records = len(session.history())
    assert not binding.reconcile(session, tasks, SyncReport())
    assert len(session.history()) == n_records
    # an update and a deletion in Label Studio
    tasks[0] = task(5, annotation(3, 4, "2026-02-01"))
    del tasks[1]
    report = SyncReport()
    binding.reconcile(session, tasks, report)
    assert (report.relabelled, report.unlabelled) == ([5], [2])
    assert dict(zip(session.labeled_indices_.tolist(), session.labels_.tolist())) == {
        7: 1,
        5: 4,
    }
    assert [h["op"] for h in session.history()][-2:] == ["relabel", "unlabel"]


def test_binding_refuses_mismatched_classes_and_choices(digits, tmp_path):
    X, _ = digits
    learner = skal.ActiveLearner(LogisticRegression(), classes=list(range(5)))
    session = skal.LabelingSession(learner, X, tmp_path / "s")
    with pytest.raises(ValueError, match=r"unknown \['5', '6', '7', '8', '9'\]"):
        _Binding(session, FakeLabelStudio(), 1)
    session = make_session(X, tmp_path / "t")
    binding = _Binding(session, FakeLabelStudio(), 1)
    with pytest.raises(ValueError, match="chose 'eleven'"):
        binding.label_of({"result": SCHEMA.result("eleven")})


def test_push_ranks_the_picks_in_skals_order(digits, tmp_path):
    X, y = digits
    session = make_session(X, tmp_path / "s")
    fake = FakeLabelStudio()
    binding = _Binding(session, fake, 1)
    picks, predicted = binding.ranking(session, 5)
    assert predicted == [None] * 5  # before any training: no predicted class
    version, pushed = binding.push(session, picks, predicted)
    assert version.startswith("skal-untrained-") and pushed == picks.tolist()
    sent = fake.predictions[-1]
    assert [p["task"] for p in sent] == [1000 + r for r in picks]
    assert [p["score"] for p in sent] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert {p["model_version"] for p in sent} == {version}
    assert fake.settings["model_version"] == version
    assert fake.settings["sampling"] == "Uncertainty sampling"
    assert fake.ordered
    # the same picks again: nothing imported
    assert binding.push(session, picks, predicted) == (version, [])
    session.teach(picks, y[picks])
    picks2, predicted2 = binding.ranking(session, 5)
    assert np.array_equal(picks2, session.pending_)
    assert predicted2 == session.learner_.predict(X[picks2]).tolist()
    version2, _ = binding.push(session, picks2, predicted2)
    assert version2.startswith(f"skal-{session.model_version_}-")
    assert fake.deleted == [version]
    assert fake.predictions[-1][0]["result"] == SCHEMA.result(str(predicted2[0]))


def test_backend_records_webhooks_without_waiting_for_training(
    digits, tmp_path, monkeypatch
):
    X, y = digits
    monkeypatch.setattr(_backend, "LabelStudioClient", FakeLabelStudio)
    session = make_session(X, tmp_path / "s")
    backend = _backend.Backend(session, "http://ls", "key", 1, n=5, train_every=2)
    fake = backend.client
    backend.start()
    try:
        deadline = time.monotonic() + 30
        while backend.state["pushes"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        first = backend.state["pushed"][0]
        payload = {
            "action": "ANNOTATION_CREATED",
            "task": task(first),
            "annotation": annotation(1, y[first]),
        }
        assert backend.webhook(payload) == "queued"
        assert backend.webhook({"action": "PROJECT_UPDATED"}) == "ignored"
        assert backend.webhook({**payload, "task": {"data": {}}}).startswith("ignored")
        while "recorded" not in backend.timings.get(first, {}):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        state = backend.status(labels=True)
        assert state["labels"] == {str(first): int(y[first])}
        assert state["fits"] == 0  # train_every=2: recorded, not trained
        # a deletion: the backend pulls every annotation and reconciles
        fake.tasks = []
        assert backend.webhook({"action": "ANNOTATIONS_DELETED"}) == "reconcile"
        while backend.status(labels=True)["labels"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        second = next(r for r in range(60) if y[r] != y[first])
        fake.tasks = [
            task(first, annotation(1, y[first])),
            task(second, annotation(2, y[second])),
        ]
        backend.request_reconcile(fit=True)
        while backend.state["fits"] < 1 or backend.state["training"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        while not backend.state["pushed_version"].startswith(
            f"skal-{backend.state['model_version']}-"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        backend.stop()
    results = backend.predict([task(first), task(59), {"data": {}}])
    assert [r["model_version"] for r in results] == [backend.binding.version] * 3
    assert results[1]["score"] == backend.scores.get(59, 1.0)
    assert results[2] == {
        "result": [],
        "score": 1.0,
        "model_version": backend.binding.version,
    }
    predicted = session.learner_.predict(X[[first]])[0]
    assert results[0]["result"] == SCHEMA.result(str(predicted))


def test_bad_arguments_are_named(digits, tmp_path, monkeypatch):
    X, _ = digits
    from skal.label_studio import sync
    from skal.label_studio.__main__ import main

    session = make_session(X, tmp_path / "s")
    with pytest.raises(ValueError, match="'n' parameter of sync must be an int in"):
        sync(session, "http://ls", "key", 1, n=0)
    with pytest.raises(TypeError, match="'n' parameter of sync .* of type float"):
        sync(session, "http://ls", "key", 1, n=2.0)
    with pytest.raises(TypeError, match="'fit' parameter of sync"):
        sync(session, "http://ls", "key", 1, fit="yes")
    monkeypatch.setattr(_backend, "LabelStudioClient", FakeLabelStudio)
    with pytest.raises(ValueError, match="'train_every' parameter of Backend"):
        _backend.Backend(session, "http://ls", "key", 1, train_every=0)
    with pytest.raises(ValueError, match="'n' parameter of Backend must be an int"):
        _backend.Backend(session, "http://ls", "key", 1, n=-3)
    with pytest.raises(TypeError, match="'n' parameter of Backend .* type str"):
        _backend.Backend(session, "http://ls", "key", 1, n="5")
    # the command line names what the user's file lacks
    user_file = tmp_path / "pool.py"
    user_file.write_text("learner = None\n")
    with pytest.raises(SystemExit, match="must define pool"):
        main(["serve", str(user_file), "--project", "1", "--api-key", "k"])
