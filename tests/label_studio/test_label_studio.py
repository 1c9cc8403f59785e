"""skal and a real Label Studio server: batch sync, the live backend, crashes.

Run by ``make test-label-studio`` (skipped otherwise): Label Studio 1.23 on
127.0.0.1 with sqlite, 240 digits as PNG files served through its local
storage, annotations made through its HTTP API as a person's submit makes
them.
"""

import tempfile
import time

import numpy as np
import pytest

import skal

pytestmark = pytest.mark.label_studio


def digits_learner(epochs=10):
    return skal.ActiveLearner(
        skal.NeuralNetClassifier(
            skal.nets.MLP,
            module__hidden_units=(32,),
            max_epochs=epochs,
            lr=3e-3,
            train_split=None,
            verbose=0,
        ),
        strategy="margin",
        classes=list(range(10)),
        random_state=0,
    )


def test_sync_rounds_serve_skals_order(label_studio):
    from skal.label_studio import ImageFolder, sync

    ls = label_studio
    project, tasks = ls.new_project("sync rounds")
    assert sorted(tasks) == list(range(240))
    pool = ImageFolder(ls.pool, preload=True)
    session = skal.LabelingSession(digits_learner(), pool, tempfile.mkdtemp())
    versions = set()
    for _ in range(3):
        report = sync(session, ls.url, ls.api_key, project, n=4)
        assert len(report.pushed) == 4
        assert report.model_version not in versions
        versions.add(report.model_version)
        settings = ls.client.project(project)
        assert settings["model_version"] == report.model_version
        assert settings["sampling"] == "Uncertainty sampling"
        # Label Studio's stream serves skal's picks, in skal's order
        for pick in report.pushed:
            task = ls.client.next_task(project)
            assert task["data"]["pool_index"] == pick
            ls.client.annotate(task["id"], ls.answer(ls.labels[pick]))
        answered = report.pushed
    final = sync(session, ls.url, ls.api_key, project, n=4)
    assert final.taught == answered and final.trained
    # the session holds exactly Label Studio's answers, and trained on them
    expected = ls.annotations(project)
    assert dict(zip(session.labeled_indices_.tolist(), session.labels_.tolist())) == (
        expected
    )
    assert sorted(session.learner_.y_labeled_.tolist()) == sorted(expected.values())
    assert not session.needs_fit
    # a second sync with nothing new changes nothing, imports nothing
    again = sync(session, ls.url, ls.api_key, project, n=4)
    assert (again.taught, again.relabelled, again.unlabelled, again.pushed) == (
        [],
        [],
        [],
        [],
    )
    assert again.model_version == final.model_version
    assert len(session.history()) == 12


def test_backend_rounds_corrections_and_next_task(label_studio, backend_factory):
    ls = label_studio
    project, tasks = ls.new_project("live backend")
    backend = backend_factory(project)
    backend.start()
    # it connected itself as the project's ML backend (Label Studio called
    # its /health and /setup, and made the webhook that sends every event)
    for _ in range(300):
        if ls.client.ml_backends(project):
            break
        time.sleep(0.1)
    assert [b["url"] for b in ls.client.ml_backends(project)] == [backend.url]
    annotations = {}
    n_labeled = 0
    for round_ in range(3):
        for _ in range(3):
            state = backend.status()
            task = ls.client.next_task(project)
            row = task["data"]["pool_index"]
            # the stream serves skal's top unlabelled pick
            assert row == state["pushed"][0]
            annotation = ls.client.annotate(task["id"], ls.answer(ls.labels[row]))
            annotations[row] = annotation["id"]
            n_labeled += 1
            state = backend.wait_idle(n_labeled)
            assert state["labels"][str(row)] == ls.labels[row]
        # one training per answer (each waited for), one push after each
        assert state["fits"] == n_labeled == 3 * (round_ + 1)
    versions_before = state["model_version"]
    # a correction reaches the session
    fixed_row = next(iter(annotations))
    wrong = (int(ls.labels[fixed_row]) + 1) % 10
    ls.client.request(
        "PATCH",
        f"/api/annotations/{annotations[fixed_row]}",
        json={"result": ls.answer(wrong)},
    )
    state = backend.wait(
        lambda s: s["labels"].get(str(fixed_row)) == wrong, labels=True
    )
    state = backend.wait_idle(n_labeled)
    assert state["model_version"] != versions_before
    # a deletion reaches the session
    deleted_row = list(annotations)[1]
    ls.client.request("DELETE", f"/api/annotations/{annotations[deleted_row]}")
    state = backend.wait(lambda s: str(deleted_row) not in s["labels"], labels=True)
    state = backend.wait_idle(n_labeled - 1)
    assert {int(r): v for r, v in state["labels"].items()} == ls.annotations(project)
    backend.stop()
    session = skal.LabelingSession(
        digits_learner(), skal.label_studio.ImageFolder(ls.pool), backend.directory
    )
    ops = [(h["op"], h["index"]) for h in session.history()]
    assert ops.count(("relabel", fixed_row)) == 1
    assert ops.count(("unlabel", deleted_row)) == 1
    assert sorted(r for op, r in ops if op == "label") == sorted(annotations)
    assert all(h["annotator"].startswith("label-studio") for h in session.history())


def test_backend_sigkill_during_training_loses_nothing(label_studio, backend_factory):
    ls = label_studio
    project, tasks = ls.new_project("crash")
    # trainings of a few seconds, so that the kill lands in one
    backend = backend_factory(project, epochs=1500, n=10)
    backend.start(timeout=300)
    given = []

    def answer_next():
        task = ls.client.next_task(project)
        row = task["data"]["pool_index"]
        ls.client.annotate(task["id"], ls.answer(ls.labels[row]))
        given.append(row)

    for _ in range(3):
        answer_next()
    backend.wait_idle(len(given), timeout=300)
    answer_next()
    state = backend.wait(lambda s: s["training"], timeout=120)
    assert state["training"]
    backend.kill()
    # answers given while the backend is down (their webhooks fail)
    answer_next()
    answer_next()
    restarted = backend_factory(project, epochs=1500, n=10)
    restarted.directory = backend.directory
    restarted.command[restarted.command.index("--directory") + 1] = str(
        backend.directory
    )
    restarted.start(timeout=300)
    state = restarted.wait_idle(len(given), timeout=300)
    labels = {int(r): v for r, v in state["labels"].items()}
    assert labels == ls.annotations(project) == {r: ls.labels[r] for r in given}
    restarted.stop()
    session = skal.LabelingSession(
        digits_learner(1500), skal.label_studio.ImageFolder(ls.pool), backend.directory
    )
    history = session.history()
    # each answer recorded exactly once, none lost, none applied twice
    assert sorted(h["index"] for h in history) == sorted(given)
    assert {h["op"] for h in history} == {"label"}
    assert not session.needs_fit
    assert np.array_equal(np.sort(session.labeled_indices_), np.sort(given))
