"""A Label Studio ML backend around a LabelingSession (Starlette + uvicorn)."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from numbers import Integral

from .._data import n_samples, take
from ..session import LabelingSession
from ..validation import Interval, validate_params
from ._client import LabelStudioClient
from ._sync import SyncReport, _annotator, _Binding

logger = logging.getLogger("skal.label_studio")

_ANSWER_ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
_RECONCILE_ACTIONS = ("ANNOTATIONS_DELETED", "ANNOTATION_DELETED", "START_TRAINING")


class Backend:
    """The state of a running skal ML backend: a session bound to a project.

    Three threads share the work, so that no request waits on training:

    - web requests (``/webhook``) only queue what Label Studio reported and
      answer at once (Label Studio waits one second for a webhook);
    - the *recorder* thread writes the queued answers into the session's
      log (``teach`` / ``relabel`` / ``unlabel`` without training) through
      a second session object on the same directory, so recording goes on
      while the model trains; a deletion, a skipped task or a request to
      train makes it pull every annotation and reconcile;
    - the *trainer* thread trains on everything recorded (answers that
      arrive during a training are taken together by the next one), then
      pushes skal's next picks to Label Studio in one bulk import and sets
      the project's ``model_version``.

    On start it reconciles the session with Label Studio's annotations:
    whatever happened while it was down (a crash during training, answers
    given meanwhile) is caught up, and nothing is applied twice, because
    the session is made equal to Label Studio's answers rather than
    replaying events.

    Parameters
    ----------
    session : LabelingSession
        The session (its pool's tasks carry ``pool_index``).
    url, api_key : str
        Label Studio's address and an access token.
    project : int
        The Label Studio project.
    n : int, default=100
        How many of skal's picks each push ranks.
    prune : bool, default=True
        Delete the predictions of superseded versions.
    train_every : int, default=1
        Train once at least this many answers (or corrections) were
        recorded since the last training; answers that arrive while it
        trains wait for the next one. ``START_TRAINING`` trains at once.
    task_ids : dict, default=None
        ``pool_index -> task id`` when known (as
        :meth:`LabelStudioClient.import_images` returns it); None lists the
        project's tasks when first needed.

    Examples
    --------
    With a Label Studio server running, :func:`serve` builds one and runs
    it behind a web server; in a process of one's own:

    >>> from skal.label_studio import Backend, create_app
    >>> backend = Backend(session, url, api_key, project=1)  # doctest: +SKIP
    >>> app = create_app(backend)  # doctest: +SKIP
    >>> backend.start()  # doctest: +SKIP
    """

    def __init__(
        self,
        session,
        url,
        api_key,
        project,
        *,
        n=100,
        prune=True,
        train_every=1,
        task_ids=None,
    ):
        positive = [Interval(Integral, 1, None, closed="left")]
        validate_params(
            "Backend",
            {"n": n, "prune": prune, "train_every": train_every},
            {"n": positive, "prune": ["boolean"], "train_every": positive},
        )
        self.session = session
        self.client = LabelStudioClient(url, api_key)
        self.binding = _Binding(session, self.client, project)
        if task_ids is not None:
            self.binding.set_tasks(task_ids)
        self.project = self.binding.project
        self.n = n
        self.train_every = train_every
        self._since_fit = 0
        self._trained_on: dict = {}
        if not session.needs_fit:
            self._trained_on = dict(
                zip(session.labeled_indices_.tolist(), session.labels_.tolist())
            )
        self.prune = prune
        self.n_pool = n_samples(session.pool)
        # a second session object on the directory: it records answers
        # while the first trains (each operation locks the directory)
        self.recorder = LabelingSession(
            session.learner,
            session.pool,
            session.directory,
            cold_start=session.cold_start,
            lock_timeout=max(session.lock_timeout, 60.0),
        )
        self._events: deque = deque()
        self._wake_recorder = threading.Condition()
        self._wake_trainer = threading.Condition()
        self._model_lock = threading.Lock()  # the session (trainer, /predict)
        self._record_lock = threading.Lock()  # the recorder session object
        self._info_lock = threading.Lock()  # timings and state
        self._stop = threading.Event()
        self._dirty = True
        self._force_fit = False
        self._threads: list = []
        self.ready = threading.Event()
        self.scores: dict = {}
        self.timings: dict = {}
        self.state = {
            "training": False,
            "fits": 0,
            "pushes": 0,
            "reconciles": 0,
            "model_version": session.model_version_,
            "pushed_version": self.binding.version,
            "pushed": [],
            "last_fit_s": None,
            "last_push_s": None,
            "errors": [],
        }

    # ------------------------------------------------------------ control
    def start(self, connect_url=None):
        """Start the recorder and trainer threads (and connect to Label Studio).

        Parameters
        ----------
        connect_url : str, default=None
            This backend's address, to connect it to the project as its ML
            backend; None leaves the connection to the person.
        """
        for target in (self._recorder_loop, self._trainer_loop):
            thread = threading.Thread(target=target, daemon=True, name=target.__name__)
            thread.start()
            self._threads.append(thread)
        self.request_reconcile()
        if connect_url is not None:
            threading.Thread(
                target=self._connect, args=(connect_url,), daemon=True
            ).start()

    def stop(self, timeout=30.0):
        """Stop the threads after the work in hand.

        Parameters
        ----------
        timeout : float, default=30.0
            Seconds to wait for each thread.
        """
        self._stop.set()
        for condition in (self._wake_recorder, self._wake_trainer):
            with condition:
                condition.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def _connect(self, url):
        try:
            self.client.connect_backend(self.project, url)
        except Exception as exc:  # reported, the backend keeps serving
            self._error("connecting the ML backend", exc)

    def _error(self, what, exc):
        logger.exception("skal backend: %s failed", what)
        self.state["errors"] = (self.state["errors"] + [f"{what}: {exc}"])[-20:]

    # ------------------------------------------------------------ events
    def request_reconcile(self, tasks=None, fit=False):
        """Queue a full reconciliation with Label Studio's annotations.

        Parameters
        ----------
        tasks : list of dict, default=None
            The annotated tasks (as Label Studio exports them); None pulls
            them from Label Studio.
        fit : bool, default=False
            Train afterwards even if fewer than ``train_every`` answers
            changed.
        """
        self._queue(("reconcile", tasks, fit, time.time()))

    def webhook(self, payload: dict) -> str:
        """Queue what a webhook reported.

        Parameters
        ----------
        payload : dict
            The webhook's JSON body: ``action``, ``task``, ``annotation``.

        Returns
        -------
        outcome : str
            ``"queued"``, ``"reconcile"`` or ``"ignored..."``.
        """
        action = payload.get("action")
        received = time.time()
        if action in _ANSWER_ACTIONS:
            task = payload.get("task") or {}
            annotation = payload.get("annotation") or {}
            row = self.binding.pool_index(task)
            if row is None:
                return "ignored: the task has no pool_index"
            label = self.binding.label_of(annotation)
            if label is None:  # skipped, or the choice was cleared
                self.request_reconcile()
                return "reconcile"
            self._mark([row], "received", received)
            self._queue(("set", row, label, _annotator(annotation), received))
            return "queued"
        if action in _RECONCILE_ACTIONS:
            self.request_reconcile(fit=action == "START_TRAINING")
            return "reconcile"
        return "ignored"

    def _mark(self, rows, what, when, only_if=None):
        with self._info_lock:
            for row in rows:
                entry = self.timings.setdefault(row, {})
                if only_if is None or (only_if in entry and what not in entry):
                    entry[what] = when

    def _queue(self, event):
        with self._wake_recorder:
            self._events.append(event)
            self._wake_recorder.notify()

    # ----------------------------------------------------------- recorder
    def _recorder_loop(self):
        while not self._stop.is_set():
            with self._wake_recorder:
                while not self._events and not self._stop.is_set():
                    self._wake_recorder.wait()
                events = list(self._events)
                self._events.clear()
            if not events:
                continue
            force_fit, changed = False, 0
            for event in events:
                try:
                    fit, n_changed = self._record(event)
                    force_fit |= fit
                    changed += n_changed
                except Exception as exc:
                    self._error(f"recording {event[0]}", exc)
            with self._wake_trainer:
                self._dirty = True
                self._since_fit += changed
                self._force_fit |= force_fit
                self._wake_trainer.notify()

    def _record(self, event):
        kind = event[0]
        if kind == "set":
            _, row, label, annotator, _received = event
            with self._record_lock:
                done = self.binding.apply(self.recorder, row, label, annotator)
            self._mark([row], "recorded", time.time())
            return False, int(done is not None)
        _, tasks, fit, _received = event
        if tasks is None:
            tasks = self.client.annotated_tasks(self.project)
        report = SyncReport()
        with self._record_lock:
            self.binding.reconcile(self.recorder, tasks, report)
        self._mark(report.taught + report.relabelled, "recorded", time.time())
        self.state["reconciles"] += 1
        self.ready.set()
        changed = report.taught + report.relabelled + report.unlabelled
        return fit or not self.state["reconciles"] - 1, len(changed)

    # ------------------------------------------------------------ trainer
    def _trainer_loop(self):
        while not self._stop.is_set():
            with self._wake_trainer:
                while not self._dirty and not self._stop.is_set():
                    self._wake_trainer.wait()
                if self._stop.is_set():
                    return
                self._dirty = False
                force, self._force_fit = self._force_fit, False
                fit = force or self._since_fit >= self.train_every
                if fit:
                    self._since_fit = 0
            if not self.ready.is_set():
                continue  # the first reconciliation is not done yet
            try:
                self._train_and_push(fit, force)
            except Exception as exc:
                self._error("training or pushing", exc)
                time.sleep(1.0)
                with self._wake_trainer:
                    self._dirty = True

    def _train_and_push(self, fit, force):
        session = self.session
        with self._model_lock:
            before = session.model_version_
            started = time.time()
            if fit:
                self.state["training"] = True
                try:
                    session.fit()
                finally:
                    self.state["training"] = False
            if fit:
                self._trained_on = dict(
                    zip(session.labeled_indices_.tolist(), session.labels_.tolist())
                )
            if session.model_version_ != before:
                self.state["fits"] += 1
                self.state["last_fit_s"] = time.time() - started
                self.state["model_version"] = session.model_version_
                trained = session.labeled_indices_.tolist()
                self._mark(trained, "trained", time.time(), only_if="recorded")
            with self._record_lock:
                answered = set(self.recorder.labeled_indices_.tolist())
            pushed = set(self.state["pushed"])
            stale = session.model_version_ != before or force or not pushed - answered
            if not stale and self.binding.version:
                return
            picks, predicted = self.binding.ranking(session, self.n)
        started = time.time()
        version, pushed = self.binding.push(session, picks, predicted, prune=False)
        if pushed:
            self.scores = {row: k / len(pushed) for k, row in enumerate(pushed)}
            self.state["pushes"] += 1
            self.state["last_push_s"] = time.time() - started
            self.state["pushed"] = pushed
            with self._info_lock:
                rows = list(self.timings)
            self._mark(rows, "pushed", time.time(), only_if="trained")
        old, self.state["pushed_version"] = self.state["pushed_version"], version
        if self.prune and old and old != version and old.startswith("skal-"):
            try:
                self.client.delete_model_version(self.project, old)
            except Exception as exc:
                self._error("deleting superseded predictions", exc)

    # ------------------------------------------------------------ predict
    def predict(self, tasks):
        """Answer Label Studio's ``/predict``: the predicted class and skal's score.

        Parameters
        ----------
        tasks : list of dict
            Label Studio's tasks (their ``data`` carries ``pool_index``).

        Returns
        -------
        results : list of dict
            One ``{"result", "score", "model_version"}`` per task, in order;
            the score is the task's in the last push (1.0 when it was not
            pushed), so that Label Studio keeps skal's order.
        """
        rows = [self.binding.pool_index(task) for task in tasks]
        known = [r for r in rows if r is not None]
        labels = {}
        with self._model_lock:
            if known and self.session.model_version_ is not None:
                predicted = self.session.learner_.predict(
                    take(self.session.pool, known)
                )
                labels = dict(zip(known, predicted.tolist()))
        version = self.binding.version or "skal"
        results = []
        for row in rows:
            label = labels.get(row)
            choice = None if label is None else self.binding.to_choice.get(str(label))
            results.append(
                {
                    "result": []
                    if choice is None
                    else self.binding.schema.result(choice),
                    "score": self.scores.get(row, 1.0),
                    "model_version": version,
                }
            )
        return results

    def status(self, labels=False):
        """The backend's state, for monitoring and tests (``GET /status``).

        Parameters
        ----------
        labels : bool, default=False
            Include the answers the session holds and, per pool row, when
            its answer was received, recorded, trained on and pushed.

        Returns
        -------
        state : dict
        """
        state = dict(self.state)
        with self._record_lock:
            n_labeled = len(self.recorder.labeled_indices_)
        state.update(
            ready=self.ready.is_set(),
            queued=len(self._events),
            n_labeled=n_labeled,
        )
        if labels:
            with self._record_lock:
                rows = self.recorder.labeled_indices_.tolist()
                values = self.recorder.labels_.tolist()
            state["labels"] = {str(r): lab for r, lab in zip(rows, values)}
            state["labels_trained"] = dict(zip(rows, values)) == self._trained_on
            with self._info_lock:
                state["timings"] = {str(r): dict(t) for r, t in self.timings.items()}
        return state


def create_app(backend: Backend):
    """The Starlette application of a :class:`Backend` (the ML-backend protocol).

    Parameters
    ----------
    backend : Backend

    Returns
    -------
    app : starlette.applications.Starlette

    Examples
    --------
    >>> import uvicorn
    >>> from skal.label_studio import Backend, create_app
    >>> backend = Backend(session, url, api_key, project=1)  # doctest: +SKIP
    >>> uvicorn.run(create_app(backend), port=9090)  # doctest: +SKIP
    """
    import anyio.to_thread
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def health(request):
        return JSONResponse({"status": "UP", "model_class": "skal.LabelingSession"})

    async def setup(request):
        # no lock, no I/O: Label Studio gives /setup 3 seconds
        return JSONResponse({"model_version": backend.binding.version or "skal"})

    async def webhook(request):
        payload = await request.json()
        outcome = backend.webhook(payload)
        return JSONResponse({"status": "ok", "result": outcome}, status_code=201)

    async def train(request):
        payload = await request.json()
        backend.request_reconcile(payload.get("annotations"), fit=True)
        return JSONResponse({"status": "ok", "result": "reconcile"}, status_code=201)

    async def predict(request):
        payload = await request.json()
        results = await anyio.to_thread.run_sync(
            backend.predict, payload.get("tasks") or []
        )
        return JSONResponse({"results": results})

    def status(request):
        return JSONResponse(backend.status(labels="labels" in request.query_params))

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/", health, methods=["GET"]),
        Route("/setup", setup, methods=["POST"]),
        Route("/webhook", webhook, methods=["POST"]),
        Route("/train", train, methods=["POST"]),
        Route("/predict", predict, methods=["POST"]),
        Route("/status", status, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def serve(
    session,
    host: str = "127.0.0.1",
    port: int = 9090,
    *,
    url: str,
    api_key: str,
    project: int,
    n: int = 100,
    connect: bool = True,
    prune: bool = True,
    train_every: int = 1,
    task_ids: dict | None = None,
    log_level: str = "warning",
) -> None:
    """Run a Label Studio ML backend for a labelling session (blocks).

    It implements the ML-backend protocol: ``GET /health``, ``POST
    /setup``, ``/predict`` and ``/webhook`` (``ANNOTATION_CREATED``,
    ``ANNOTATION_UPDATED``, ``ANNOTATIONS_DELETED``, ``START_TRAINING``),
    and the legacy ``POST /train``; ``GET /status`` reports its state. See
    :class:`Backend` for how answers, training and pushes are organised.

    From a shell, with a Python file that defines ``learner`` and ``pool``::

        python -m skal.label_studio serve my_pool.py --port 9090 \\
            --url http://localhost:8080 --api-key $LABEL_STUDIO_API_KEY --project 1

    Parameters
    ----------
    session : LabelingSession
        The session; its pool's tasks carry ``pool_index``.
    host : str, default="127.0.0.1"
        Address to bind; the default accepts only local connections.
    port : int, default=9090
        Port to listen on.
    url, api_key : str
        Label Studio's address and an access token.
    project : int
        The Label Studio project.
    n : int, default=100
        How many of skal's picks each push ranks.
    connect : bool, default=True
        Connect the backend to the project (Label Studio then sends it every
        event through a webhook) unless it already is.
    prune : bool, default=True
        Delete the predictions of superseded versions.
    train_every : int, default=1
        Train once this many answers were recorded since the last training.
    task_ids : dict, default=None
        ``pool_index -> task id`` when known; None lists the project's tasks.
    log_level : str, default="warning"
        The log level of uvicorn.

    Examples
    --------
    >>> from skal.label_studio import serve
    >>> serve(session, port=9090, url=url, api_key=key, project=1)  # doctest: +SKIP
    """
    import uvicorn

    backend = Backend(
        session,
        url,
        api_key,
        project,
        n=n,
        prune=prune,
        train_every=train_every,
        task_ids=task_ids,
    )
    app = create_app(backend)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level)
    server = uvicorn.Server(config)

    def start_when_listening():
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            backend.start(connect_url=f"http://{host}:{port}" if connect else None)

    threading.Thread(target=start_when_listening, daemon=True).start()
    try:
        server.run()
    finally:
        backend.stop()
