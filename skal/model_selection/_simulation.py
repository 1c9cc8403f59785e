"""One simulated active-learning run: the loop every public function shares."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np
import torch
from sklearn.base import clone
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_array, column_or_1d
from skorch import NeuralNet
from tqdm.auto import tqdm

from .._data import (
    DatasetOracle,
    array_pool,
    is_torch_dataset,
    n_samples,
    take,
)
from .._persistence import (
    CheckpointError,
    load_state_dicts,
    restore_arguments,
    state_dicts,
)
from .._progress import observe_inference_batches
from .._utils import final_step
from .._version import __version__ as skal_version
from ..coldstart import LABEL_FREE_METHODS, select_label_free
from ..strategies import get_strategy
from ..validation import Interval, Options
from ._checkpoint import _unusable
from ._fingerprint import code_fingerprints, stable_token

# "random" and "stratified" read labels (at least one sample per class);
# the label-free methods of skal.coldstart do not
INITIAL_MODES = ("random", "stratified") + tuple(
    m for m in LABEL_FREE_METHODS if m != "random"
)


# the loop's sizes and initial set, declared once for every public entry
LOOP_CONSTRAINTS = {
    "n_initial": [Interval(Integral, 1, None, closed="left")],
    "query_size": [Interval(Integral, 1, None, closed="left")],
    "n_rounds": [Interval(Integral, 0, None, closed="left")],
    "initial": [Options(INITIAL_MODES)],
}
# the rest of a simulation's settings: where checkpoints go, progress bars
SETTINGS_CONSTRAINTS = {
    "checkpoint_dir": [str, os.PathLike, None],
    "verbose": [Interval(Integral, 0, None, closed="left"), "boolean"],
    "random_state": ["random_state"],
}


def check_learner(learner):
    if not all(hasattr(learner, name) for name in ("query", "teach", "classes")):
        raise TypeError(
            "learner must be a skal.ActiveLearner (with query, teach and classes), "
            f"got {type(learner).__name__}; wrap a classifier as "
            "skal.ActiveLearner(classifier, strategy=...)"
        )


def check_pool_size(n_train, n_initial, query_size, n_rounds, where="the data"):
    needed = n_initial + n_rounds * query_size
    if needed > n_train:
        raise ValueError(
            f"n_initial + n_rounds * query_size = {n_initial} + {n_rounds} * "
            f"{query_size} = {needed} labels are needed, but {where} has only "
            f"{n_train} training samples; lower n_rounds or query_size"
        )


_MAX_DRAWS = 100


def initial_indices(y_train, n_initial, initial, rng, *, X_train=None, learner=None):
    """Positions (into ``y_train``) of the initial labelled set.

    The label-free methods (``"kmeans++"``, ``"kcenter"``, ``"typiclust"``)
    pick rows of ``X_train`` in the embedding of ``learner`` (unfitted: its
    untrained network's; see :func:`skal.coldstart.select_label_free`) and
    read no label, so they may miss classes. The two other modes give at
    least one sample of every class present.
    ``"random"`` draws uniform subsets until one holds every class, so only
    the labels of drawn candidates are read (after ``_MAX_DRAWS`` failures, a
    random sample of each missing class replaces a sample of a class drawn
    more than once). ``"stratified"`` allocates the set proportionally to the
    class frequencies of the training part (largest remainders, at least one
    each) and so reads all its labels.
    """
    if initial not in ("random", "stratified"):
        return select_label_free(
            learner, X_train, n_initial, method=initial, random_state=rng
        )
    classes, y_idx, counts = np.unique(y_train, return_inverse=True, return_counts=True)
    n_classes = len(classes)
    if n_initial < n_classes:
        raise ValueError(
            f"n_initial={n_initial} is smaller than the {n_classes} classes of the "
            "training part; the initial set needs at least one sample per class"
        )
    if initial == "random":
        for _ in range(_MAX_DRAWS):
            chosen = rng.choice(len(y_train), n_initial, replace=False)
            if len(np.unique(y_idx[chosen])) == n_classes:
                return chosen
        for k in np.setdiff1d(np.arange(n_classes), y_idx[chosen]):
            drawn = np.bincount(y_idx[chosen], minlength=n_classes)
            spare = np.flatnonzero(drawn[y_idx[chosen]] > 1)
            chosen[rng.choice(spare)] = rng.choice(np.flatnonzero(y_idx == k))
        return chosen
    expected = n_initial * counts / counts.sum()
    alloc = np.minimum(np.maximum(1, np.floor(expected)).astype(int), counts)
    while alloc.sum() < n_initial:
        gap = np.where(alloc < counts, expected - alloc, -np.inf)
        alloc[np.argmax(gap)] += 1
    while alloc.sum() > n_initial:
        excess = np.where(alloc > 1, alloc - expected, -np.inf)
        alloc[np.argmax(excess)] -= 1
    chosen = np.concatenate(
        [
            rng.choice(np.flatnonzero(y_idx == k), alloc[k], replace=False)
            for k in range(n_classes)
        ]
    )
    return rng.permutation(chosen)


def check_data(X, y, learner, **check_params):
    """X and the oracle ``y``: validated arrays, X as given to a pipeline, or a
    torch Dataset whose labels are read only for the rows asked (y=None)."""
    if is_torch_dataset(X):
        if y is None:
            if learner.classes is None:
                raise ValueError(
                    "X is a torch Dataset and y is None: the labels are read from "
                    "the items of queried rows only, so declare every class up "
                    "front with ActiveLearner(classes=...)"
                )
            return X, DatasetOracle(X)
    elif isinstance(learner.estimator, Pipeline) and len(learner.estimator) > 1:
        pass  # lists of strings, DataFrames: the pipeline validates them
    else:
        X = check_array(X, allow_nd=True, dtype=None, **check_params)
    y = column_or_1d(y, warn=True)
    if len(y) != n_samples(X):
        raise ValueError(f"X has {n_samples(X)} rows but y has {len(y)} labels")
    return X, y


def _net_of(learner):
    final = final_step(learner.estimator_)
    return final if isinstance(final, NeuralNet) else None


@dataclass
class RunResult:
    """One run's labelled rows (in order), scores, final learner, snapshots."""

    order: np.ndarray
    scores: list
    learner: object
    snapshots: list = field(default_factory=list)


def configure(learner, y, seed):
    """A fresh clone seeded for this run, with every class of ``y`` declared."""
    check_learner(learner)
    # A clone per run: runs may execute in parallel or on other machines and
    # must not share fitted state; the seed makes each run repeatable alone.
    learner = clone(learner)
    params = {"random_state": seed}
    if learner.classes is None:
        # The initial set rarely holds every class; declaring them all keeps
        # the network's output width and predict_proba's columns fixed across
        # rounds. The set of class names says nothing about which pool row
        # has which label.
        params["classes"] = np.unique(y)
    return learner.set_params(**params)


# items of a Dataset read for its digest: all of them up to this many, else
# this many at positions drawn with a fixed seed
DIGEST_ITEMS = 1000
# items read twice, to tell a Dataset whose items are random
_REREAD = 8


def data_digest(X, y) -> str:
    """A SHA-256 of the data, computed once per call.

    Arrays and DataFrames are hashed whole (values, dtype and shape: the
    same bytes as float32 and as uint8 are different data). A torch Dataset
    is hashed by its class, its length, and the inputs and labels of its
    items: all of them when it has at most ``DIGEST_ITEMS`` (1,000), else
    ``DIGEST_ITEMS`` items at positions drawn with a fixed seed (the same
    positions for every Dataset of that length); ``y``, when given beside a
    Dataset, whole. Two large Datasets that differ only outside the sample
    share a digest.
    """
    h = hashlib.sha256()
    if not is_torch_dataset(X):
        for arr in (X, y):
            _hash_array(h, arr)
        return h.hexdigest()
    n = len(X)
    h.update(f"{type(X).__module__}.{type(X).__qualname__}:{n}".encode())
    positions = np.arange(n)
    if n > DIGEST_ITEMS:
        positions = np.sort(
            np.random.RandomState(0).choice(n, DIGEST_ITEMS, replace=False)
        )
    for i in positions.tolist():
        h.update(_item_digest(X[i], i))
    for i in positions[:_REREAD].tolist():
        if _item_digest(X[i], i) != _item_digest(X[i], i):
            warnings.warn(
                f"item {i} of X differs between two reads (a random transform "
                "inside the Dataset?): the run key changes at every call, so "
                "checkpointed runs are never resumed; give random augmentation "
                "to the network as train_transform instead",
                stacklevel=3,
            )
            break
    if not isinstance(y, DatasetOracle):
        _hash_array(h, y)
    return h.hexdigest()


def _hash_array(h, arr):
    arr = np.ascontiguousarray(arr.to_numpy() if hasattr(arr, "iloc") else arr)
    h.update(str((arr.dtype.str, arr.shape)).encode())
    h.update(arr.data if arr.dtype != object else repr(arr.tolist()).encode())


def _item_digest(value, i) -> bytes:
    """A digest of one item of a Dataset (tensors, arrays, PIL images, numbers
    and strings, in tuples, lists and dicts)."""
    h = hashlib.sha256()
    _hash_item(h, value, i)
    return h.digest()


def _hash_item(h, value, i):
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        h.update(f"tensor{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(value, np.ndarray | np.generic):
        _hash_array(h, np.asarray(value))
    elif hasattr(value, "getbands") and hasattr(value, "tobytes"):  # PIL
        h.update(f"image{value.mode}{value.size}".encode())
        h.update(value.tobytes())
    elif value is None or isinstance(value, bool | int | float | str | bytes):
        h.update(repr(value).encode())
    elif isinstance(value, tuple | list):
        h.update(f"{type(value).__name__}{len(value)}".encode())
        for v in value:
            _hash_item(h, v, i)
    elif isinstance(value, dict):
        h.update(f"dict{len(value)}".encode())
        for k in sorted(value, key=repr):
            h.update(repr(k).encode())
            _hash_item(h, value[k], i)
    elif hasattr(value, "item"):  # a label object
        _hash_item(h, value.item(), i)
    else:
        raise TypeError(
            f"checkpoint_dir names each run by a digest of the data, and item "
            f"{i} of X holds a {type(value).__name__}, which skal cannot hash; "
            "items may hold arrays, tensors, PIL images, numbers and strings "
            "(in tuples, lists or dicts). Run without checkpoint_dir, or make "
            "the Dataset return those"
        )


def learner_digest(learner, scoring=None) -> str:
    """A hash of the learner's parameters and the scoring, equal in every
    process for equal parameters.

    Why not ``joblib.hash``: it pickles functions by reference, so a lambda
    or a closure (a ``scoring=`` function, a callback's argument) hashed
    differently in each process, and every rerun started over in a new
    directory instead of resuming.
    """
    token = stable_token({"learner": learner, "scoring": scoring}, "learner")
    return hashlib.sha256(json.dumps(token, sort_keys=True).encode()).hexdigest()


def code_digests(learner, scoring=None) -> dict:
    """Fingerprints of the code a run depends on, recorded in its checkpoint.

    Why separate from the run key: the key names classes and functions (so
    that it is stable); an edited class keeps its name, and resuming with it
    would mix two models in one curve. The checkpoint records these hashes
    of the classes' and functions' source and refuses to resume when they
    differ, with an error that says so, rather than starting a second run
    silently.
    """
    strategy = learner.strategy
    if isinstance(strategy, str):  # the registered strategy's class
        strategy = get_strategy(strategy)
    return {
        "skal": skal_version,
        **code_fingerprints(
            {"learner": learner, "strategy": strategy, "scoring": scoring}
        ),
    }


def run_key(data_key, learner_key, train, test, settings) -> str:
    """A hash naming a run's checkpoint directory."""
    h = hashlib.sha256(f"{data_key}|{learner_key}".encode())
    for arr in (train, test if test is not None else np.empty(0, dtype=np.int64)):
        h.update(np.ascontiguousarray(arr, dtype=np.int64).data)
    h.update(repr(sorted(settings.items())).encode())
    return h.hexdigest()[:16]


@contextmanager
def pool_progress(learner, enabled, desc):
    """A tqdm bar over the inference batches a query reads (networks only;
    no bar otherwise): the pool's batches, and the labelled set's for the
    strategies that read it (dynamicAL's gradient, core-set's centres).

    Every inference loader of a skal network reports to it, whichever
    strategy reads it (see :mod:`skal._progress`). Yields the bar, or None.
    """
    net = _net_of(learner)
    if not enabled or net is None:
        yield None
        return
    bar = tqdm(desc=desc, unit="batch", leave=False)
    try:
        with observe_inference_batches(lambda: bar.update(1)):
            yield bar
    finally:
        bar.close()


def pool_rows(learner, X):
    """Where each round's pool is taken from: :func:`skal._data.array_pool`,
    which the labelling sessions use too."""
    return array_pool(X, learner.estimator)


def _snapshot(learner):
    """What it takes to score this round's model later."""
    net = _net_of(learner)
    if net is None:
        return copy.deepcopy(learner.estimator_)
    prefix = (
        copy.deepcopy(learner.estimator_[:-1])
        if isinstance(learner.estimator_, Pipeline)
        else None
    )
    return {"weights": state_dicts(net), "prefix": prefix}


def _restore(learner, X, y, state, checkpoint, n_initial, query_size, keep_snapshots):
    """Rebuild the learner and snapshots of a checkpointed run, training nothing
    for networks (their weights are loaded) and refitting other estimators."""
    order = state["_arrays"]["order"]
    if len(order) != n_initial + state["round"] * query_size:
        raise _unusable(
            checkpoint.directory,
            f"it holds {len(order)} labels after round {state['round']}, not "
            "n_initial + round * query_size = "
            f"{n_initial + state['round'] * query_size}; it belongs to another run",
        )
    is_net = isinstance(final_step(learner.estimator), NeuralNet)
    saved = restore_arguments(state, state["_arrays"])
    snapshots = []
    if is_net:
        try:
            learner.restore(
                take(X, order),
                y[order],
                weights=checkpoint.weights(state["weights"]),
                n_initial=n_initial,
                n_rounds=state["round"],
                **saved,
            )
        except (RuntimeError, ValueError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            # code outside the fingerprinted classes changed the network
            raise _unusable(
                checkpoint.directory,
                "its weights do not fit the network built from the learner's "
                f"parameters ({' '.join(str(exc).split())[:300]}); the network's "
                "code changed since the run was checkpointed",
            ) from None
        if keep_snapshots:
            for r in range(state["round"] + 1):
                prefix = None
                if isinstance(learner.estimator_, Pipeline):
                    rows = order[: n_initial + r * query_size]
                    prefix = (
                        learner.estimator_[:-1]
                        if learner.warm_start
                        else clone(learner.estimator[:-1]).fit(take(X, rows), y[rows])
                    )
                    prefix = copy.deepcopy(prefix)
                snapshots.append(
                    {
                        "weights": checkpoint.weights(f"weights-r{r}.pt"),
                        "prefix": prefix,
                    }
                )
    else:
        # Estimators that are not networks are refitted on the labelled rows,
        # which is what teach does for them (a full refit each round).
        learner.restore(take(X, order), y[order], n_rounds=state["round"], **saved)
        if keep_snapshots:
            for r in range(state["round"] + 1):
                rows = order[: n_initial + r * query_size]
                snapshots.append(clone(learner).fit(take(X, rows), y[rows]).estimator_)
    return order, snapshots


def _draw_initial(learner, X, y, train, n_initial, initial, rng):
    """Positions (into ``train``) of a run's initial labelled set."""
    if initial not in ("random", "stratified"):  # label-free: reads no y
        return initial_indices(
            None, n_initial, initial, rng, X_train=take(X, train), learner=learner
        )
    if isinstance(y, DatasetOracle):
        if initial != "random":
            raise ValueError(
                f"initial={initial!r} reads every label of the training part; "
                "with a Dataset whose labels are read only when queried, use "
                "initial='random' (a uniform draw)"
            )
        return rng.choice(len(train), n_initial, replace=False)
    return initial_indices(y[train], n_initial, initial, rng)


def simulate(
    learner,
    X,
    y,
    train,
    test=None,
    *,
    n_initial,
    query_size,
    n_rounds,
    initial="random",
    scorer=None,
    seed=0,
    checkpoint=None,
    keep_snapshots=False,
    verbose=0,
    desc="run",
):
    """Run the loop on ``X[train]`` with ``y`` as the oracle.

    Only labels of the initial set and of queried rows are read from ``y``
    (besides ``y[test]`` for scoring); strategies see ``X`` of the unlabelled
    training rows only.

    Parameters
    ----------
    learner : ActiveLearner
        Unfitted template; cloned and seeded with ``seed``.
    X, y : arrays
    train : ndarray of int
        Rows forming the initial set and the pool.
    test : ndarray of int or None
        Rows scored after every round (not scored if None).
    checkpoint : RunCheckpoint or None
        Where to commit the state after each round and resume from.
    keep_snapshots : bool
        Keep what it takes to score each round's model later.

    Returns
    -------
    RunResult
    """
    # One generator for the initial set, drawn after the learner's seed, so a
    # run is determined by ``seed`` alone, whichever process runs it.
    rng = np.random.RandomState(seed)
    learner = configure(learner, y, int(rng.randint(np.iinfo(np.int32).max)))
    state = checkpoint.load() if checkpoint is not None else None
    scores, snapshots = [], []

    def evaluate():
        if test is not None:
            scores.append(float(scorer(learner, take(X, test), y[test])))
        if keep_snapshots:
            snapshots.append(_snapshot(learner))

    def commit(round_):
        # After scoring: a committed round is complete, its score included,
        # so a resumed run never re-scores (or re-queries) a round.
        if checkpoint is not None:
            checkpoint.save(round_, order, scores, learner, net=_net_of(learner))

    bar = tqdm(
        total=n_rounds, desc=desc, disable=verbose < 2, leave=False, unit="round"
    )
    if state is None:
        order = train[_draw_initial(learner, X, y, train, n_initial, initial, rng)]
        bar.set_postfix_str(f"training on {len(order)}")
        learner.fit(take(X, order), y[order])
        evaluate()
        commit(0)
        start = 1
    else:
        order, snapshots = _restore(
            learner, X, y, state, checkpoint, n_initial, query_size, keep_snapshots
        )
        scores = list(state["scores"])
        start = state["round"] + 1
        bar.update(state["round"])
    # The pool is the training rows not labelled yet, in their original
    # order: strategies see their X only, and y is read for the picked rows.
    unlabeled = np.ones(n_samples(X), dtype=bool)
    unlabeled[order] = False
    rows = pool_rows(learner, X)
    for round_ in range(start, n_rounds + 1):
        pool = train[unlabeled[train]]
        bar.set_postfix_str(f"scoring pool of {len(pool)}")
        with pool_progress(learner, verbose >= 2, f"{desc} round {round_}: pool"):
            picked = pool[learner.query(take(rows, pool), query_size)]
        bar.set_postfix_str(f"training on {len(order) + len(picked)}")
        learner.teach(take(X, picked), y[picked])
        unlabeled[picked] = False
        order = np.concatenate([order, picked])
        evaluate()
        commit(round_)
        bar.update(1)
    bar.close()
    return RunResult(order, scores, learner, snapshots)


def load_snapshot(learner, snapshot, scratch=None, n_labeled=None):
    """A view of the fitted ``learner`` predicting with a past round's model
    (trained on ``n_labeled`` rows, if given). ``scratch`` is a reusable deep
    copy of the learner's network."""
    if not isinstance(snapshot, dict):
        return learner._with_estimator(snapshot, n_labeled)
    net = scratch if scratch is not None else copy.deepcopy(_net_of(learner))
    load_state_dicts(net, snapshot["weights"])
    if snapshot["prefix"] is not None:
        net = Pipeline(
            list(snapshot["prefix"].steps) + [(learner.estimator_.steps[-1][0], net)]
        )
    return learner._with_estimator(net, n_labeled)
