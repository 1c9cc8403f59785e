"""Label Studio's annotations into a LabelingSession, skal's order into Label Studio."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np

from .._data import n_samples, take
from ..validation import Interval, validate_params
from ._client import (
    UNCERTAINTY_SAMPLING,
    ChoicesSchema,
    LabelStudioClient,
    LabelStudioError,
)

#: prefix of the ``model_version`` of every prediction skal pushes
VERSION_PREFIX = "skal-"
# (url, project) -> pool_index -> task id: listing 10,000 tasks takes seconds
_TASK_IDS: dict = {}


@dataclass
class SyncReport:
    """What one :func:`sync` did.

    Parameters
    ----------
    taught, relabelled, unlabelled : list of int
        Pool rows whose answer was recorded, corrected or withdrawn.
    trained : bool
        Whether the model was trained.
    model_version : str
        The ``model_version`` of the predictions Label Studio now serves.
    pushed : list of int
        Pool rows pushed as predictions, skal's pick first (empty when the
        same predictions were already in Label Studio).

    Examples
    --------
    >>> from skal.label_studio import SyncReport
    >>> SyncReport(taught=[3, 5], trained=True).taught
    [3, 5]
    """

    taught: list = field(default_factory=list)
    relabelled: list = field(default_factory=list)
    unlabelled: list = field(default_factory=list)
    trained: bool = False
    model_version: str = ""
    pushed: list = field(default_factory=list)


class _Binding:
    """A session's pool bound to a Label Studio project.

    Maps the project's choice values to the learner's classes, pool rows to
    task ids, and the project's annotations to the answers the session
    should hold.
    """

    def __init__(self, session, client: LabelStudioClient, project: int):
        self.session = session
        self.client = client
        self.project = int(project)
        settings = client.project(self.project)
        self.schema = ChoicesSchema.parse(settings["label_config"])
        self.version = settings.get("model_version") or ""
        classes = session.learner_.classes
        if classes is None:
            self.to_label = {v: v for v in self.schema.values}
        else:
            declared = np.asarray(classes).tolist()
            by_text = {str(c): c for c in declared}
            missing = sorted(set(by_text) - set(self.schema.values))
            extra = sorted(set(self.schema.values) - set(by_text))
            if missing or extra:
                raise ValueError(
                    f"the choices of Label Studio project {self.project} "
                    f"{list(self.schema.values)} do not match the learner's classes "
                    f"{declared} (as text): missing {missing}, unknown {extra}"
                )
            self.to_label = {v: by_text[v] for v in self.schema.values}
        self.to_choice = {str(label): value for value, label in self.to_label.items()}
        self.n_pool = n_samples(session.pool)
        self._tasks: dict[int, int] | None = None

    # ------------------------------------------------------------- tasks
    def tasks(self, refresh=False) -> dict[int, int]:
        if self._tasks is None or refresh:
            self._tasks = self.client.task_ids(self.project)
        return self._tasks

    def set_tasks(self, mapping):
        self._tasks = dict(mapping)

    # ------------------------------------------------------- annotations
    def label_of(self, annotation) -> object | None:
        """The class an annotation chose (None: skipped, or no choice)."""
        if annotation.get("was_cancelled"):
            return None
        value = self.schema.value_of(annotation.get("result"))
        if value is None:
            return None
        if value not in self.to_label:
            raise ValueError(
                f"an annotation of Label Studio project {self.project} chose "
                f"{value!r}, which is not one of the project's choices "
                f"{list(self.schema.values)}"
            )
        return self.to_label[value]

    def pool_index(self, task) -> int | None:
        index = (task.get("data") or {}).get("pool_index")
        if isinstance(index, int) and not isinstance(index, bool):
            if 0 <= index < self.n_pool:
                return index
        return None

    def target(self, tasks) -> dict:
        """``pool row -> (label, annotator, order)``: what the session should hold.

        A task's answer is its latest (last updated) annotation that chose a
        class; skipped annotations do not count. ``order`` is the id of the
        annotation that first labelled the row, so that answers are taught
        in the order they were given.
        """
        answers = {}
        for task in tasks:
            row = self.pool_index(task)
            if row is None:
                continue
            chosen = []
            for annotation in task.get("annotations") or ():
                label = self.label_of(annotation)
                if label is not None:
                    chosen.append((annotation, label))
            if not chosen:
                continue
            latest, label = max(
                chosen, key=lambda a: (a[0].get("updated_at") or "", a[0]["id"])
            )
            first = min(a[0]["id"] for a in chosen)
            answers[row] = (label, _annotator(latest), first)
        return answers

    # ---------------------------------------------------------- reconcile
    def reconcile(self, recorder, tasks, report: SyncReport):
        """Make the session's answers those of Label Studio (idempotent).

        Rows answered in Label Studio and not in the session are taught (in
        the order they were annotated), rows answered differently are
        relabelled, rows whose annotations were deleted are withdrawn. All
        without training. Running it again changes nothing.
        """
        want = self.target(tasks)
        have = dict(zip(recorder.labeled_indices_.tolist(), recorder.labels_.tolist()))
        teach = sorted((r for r in want if r not in have), key=lambda r: want[r][2])
        relabel = [r for r in want if r in have and not _same(have[r], want[r][0])]
        unlabel = sorted(r for r in have if r not in want)
        for rows, method in ((teach, "teach"), (relabel, "relabel")):
            for annotator, group in _runs(rows, lambda r: want[r][1]):
                getattr(recorder, method)(
                    group, [want[r][0] for r in group], fit=False, annotator=annotator
                )
        if unlabel:
            recorder.unlabel(unlabel, fit=False, annotator="label-studio")
        report.taught += teach
        report.relabelled += relabel
        report.unlabelled += unlabel
        return bool(teach or relabel or unlabel)

    def apply(self, recorder, row, label, annotator) -> str | None:
        """Record one answer given in Label Studio (teach or relabel)."""
        have = dict(zip(recorder.labeled_indices_.tolist(), recorder.labels_.tolist()))
        if row in have and _same(have[row], label):
            return None
        method = "relabel" if row in have else "teach"
        try:
            getattr(recorder, method)([row], [label], fit=False, annotator=annotator)
        except ValueError as exc:
            # another writer answered or withdrew the row meanwhile
            if "have an answer" not in str(exc) and "have no answer" not in str(exc):
                raise
            method = "teach" if method == "relabel" else "relabel"
            getattr(recorder, method)([row], [label], fit=False, annotator=annotator)
        return method

    # --------------------------------------------------------------- push
    def ranking(self, session, n):
        """skal's next picks (``session.query``) and their predicted classes."""
        n_unlabelled = len(session.unlabeled_indices)
        if n_unlabelled == 0:
            return np.zeros(0, dtype=np.int64), []
        renew = not self.version.startswith(_version_stem(session))
        picks = session.query(min(n, n_unlabelled), renew=renew)
        predicted = [None] * len(picks)
        if session.model_version_ is not None:
            predicted = session.learner_.predict(take(session.pool, picks)).tolist()
        return picks, predicted

    def push(
        self, session, picks, predicted, *, prune=True, stale_ok=True
    ) -> tuple[str, list]:
        """Import the picks as predictions of one new ``model_version``.

        Label Studio's label stream (uncertainty sampling) serves the task
        with the lowest score first, so the ``k``-th pick of ``n`` gets the
        score ``k / n``: the order is skal's. The project's ``model_version``
        is set after the import (Label Studio refuses a version without
        predictions) and the superseded version's predictions are deleted.
        Nothing is imported when the project already serves these picks.
        """
        picks = [int(p) for p in picks]
        digest = hashlib.sha256(repr(picks).encode()).hexdigest()[:10]
        version = f"{_version_stem(session)}{digest}"
        if not picks or version == self.version:
            return self.version, []
        tasks = self.tasks()
        if any(p not in tasks for p in picks):
            tasks = self.tasks(refresh=True)
        absent = [p for p in picks if p not in tasks]
        if absent:
            raise ValueError(
                f"pool rows {absent[:10]} have no task in Label Studio project "
                f"{self.project}; import the pool first (import_images)"
            )
        predictions = []
        for k, (row, label) in enumerate(zip(picks, predicted)):
            result = (
                [] if label is None else self.schema.result(self.to_choice[str(label)])
            )
            predictions.append(
                {
                    "task": tasks[row],
                    "result": result,
                    "score": k / len(picks),
                    "model_version": version,
                }
            )
        try:
            self.client.import_predictions(self.project, predictions)
        except LabelStudioError:
            if not stale_ok:
                raise
            # tasks deleted or imported again since they were listed
            self.tasks(refresh=True)
            return self.push(session, picks, predicted, prune=prune, stale_ok=False)
        self.client.update_project(
            self.project, model_version=version, sampling=UNCERTAINTY_SAMPLING
        )
        self.client.order_views_by_score(self.project)
        old, self.version = self.version, version
        if prune and old.startswith(VERSION_PREFIX):
            self.client.delete_model_version(self.project, old)
        return version, picks


def _version_stem(session):
    return f"{VERSION_PREFIX}{session.model_version_ or 'untrained'}-"


def _annotator(annotation):
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return None if who is None else f"label-studio:{who}"


def _same(a, b):
    return type(a) is type(b) and a == b or str(a) == str(b)


def _runs(rows, key):
    """Consecutive groups of rows with the same key: ``(key, [rows])``."""
    group, current = [], None
    for row in rows:
        k = key(row)
        if group and k != current:
            yield current, group
            group = []
        group.append(row)
        current = k
    if group:
        yield current, group


def sync(
    session,
    url: str,
    api_key: str,
    project: int,
    *,
    n: int = 10,
    fit: bool = True,
    prune: bool = True,
) -> SyncReport:
    """One round between a labelling session and a Label Studio project.

    1. Pulls the project's annotations and makes the session's answers
       equal to them: new ones are taught, changed ones relabelled, deleted
       ones withdrawn (:meth:`~skal.LabelingSession.teach`, ``relabel``,
       ``unlabel``, without training). Label Studio holds the answers; the
       session follows it, so a second call changes nothing.
    2. Trains on them (``fit=True``).
    3. Pushes skal's next ``n`` picks (:meth:`~skal.LabelingSession.query`)
       as predictions in one bulk import, with scores ``0, 1/n, 2/n, ...``
       and one new ``model_version``, then sets the project's
       ``model_version`` to it and its sampling to uncertainty sampling.
       Label Studio's label stream then serves the picks in skal's order
       (lowest score first). Without that version match, Label Studio
       silently serves tasks at random.

    Set-based strategies (core-set, BADGE) pick a batch, not a score per
    row; the score is the rank within that batch, which is the order the
    batch was built in. Before any label the picks are the session's
    label-free first batch.

    Parameters
    ----------
    session : LabelingSession
        The session; its pool's tasks carry their row as ``pool_index``
        (see :meth:`LabelStudioClient.import_images`).
    url : str
        Label Studio's address.
    api_key : str
        An access token (see :class:`LabelStudioClient`).
    project : int
        The project's id.
    n : int, default=10
        How many picks to push.
    fit : bool, default=True
        Train on new answers before querying.
    prune : bool, default=True
        Delete the predictions of the version this push supersedes.

    Returns
    -------
    report : SyncReport

    Examples
    --------
    With a Label Studio server running (see :doc:`/label_studio`):

    >>> from skal.label_studio import sync
    >>> report = sync(session, url, api_key, project=1, n=20)  # doctest: +SKIP
    >>> report.model_version  # doctest: +SKIP
    'skal-3f09c2b1d4e7-a81c02de55'
    """
    validate_params(
        "sync",
        {"n": n, "fit": fit, "prune": prune},
        {
            "n": [Interval(Integral, 1, None, closed="left")],
            "fit": ["boolean"],
            "prune": ["boolean"],
        },
    )
    client = LabelStudioClient(url, api_key)
    binding = _Binding(session, client, project)
    key = (client.url, binding.project)
    if key in _TASK_IDS:
        binding.set_tasks(_TASK_IDS[key])
    report = SyncReport()
    binding.reconcile(session, client.annotated_tasks(binding.project), report)
    if fit and session.needs_fit:
        before = session.model_version_
        session.fit()
        report.trained = session.model_version_ != before
    picks, predicted = binding.ranking(session, n)
    report.model_version, report.pushed = binding.push(
        session, picks, predicted, prune=prune
    )
    if binding._tasks is not None:
        _TASK_IDS[key] = binding._tasks
    return report
