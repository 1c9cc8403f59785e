"""skorch classifiers that active learning can drive."""

from __future__ import annotations

import copy
import inspect
import pickle
from contextlib import contextmanager
from functools import partial
from numbers import Integral, Real

import numpy as np
import skorch
import torch
from sklearn.base import clone
from sklearn.metrics import accuracy_score
from skorch.callbacks import EpochScoring
from skorch.utils import is_dataset, to_numpy
from torch import nn

from .._data import (
    SampleDataset,
    TrainTransformed,
    collate_samples,
    dataset_labels,
    is_torch_dataset,
    to_device,
    to_module_dtype,
)
from .._items import as_item_dataset
from .._progress import observed
from .._utils import encode_labels, logits_of
from ..validation import Interval, Options, check_params
from .taps import LayerTap, find_module, last_linear_name

_CLASS_COUNT_PARAMS = ("num_classes", "n_classes")


# options of the loaders and the dataset: nothing to re-initialize
_LOADER_PREFIXES = ("iterator_train__", "iterator_valid__", "dataset__")

# per-sample transforms: parameters passed as given, never treated as
# estimators (torchvision's random transforms have a static get_params)
_TRANSFORM_PARAMS = ("transform", "train_transform")


class NeuralNetClassifier(skorch.NeuralNetClassifier):
    """A skorch ``NeuralNetClassifier`` with the defaults active learning needs.

    Differences from skorch's class, everything else unchanged:

    - the module returns logits (or a tuple whose first element is the
      logits); the default criterion is cross-entropy on them and
      ``predict_proba`` returns their softmax;
    - the default optimizer is Adam with ``lr=1e-3``, training batches are
      shuffled, no internal validation split is taken (``train_split=None``:
      labelled data is scarce) and training is silent (``verbose=0``);
    - X may be an array or a torch tensor of any numeric dtype, a pandas
      DataFrame, or a map-style ``torch.utils.data.Dataset`` whose items are
      ``x`` or ``(x, y)`` (``TensorDataset``, ``Subset``, torchvision
      datasets, ``ImageFolder``); ``fit(dataset)`` reads the labels from the
      items. Nothing is converted whole: each sample is read as a tensor of
      its own dtype (PIL images as uint8) and passed through ``transform``;
      each batch is converted on its way to the module (floating and uint8
      to float32, values unchanged; other integer dtypes kept as token ids
      when the module has an ``nn.Embedding`` or ``nn.EmbeddingBag``, else
      float32 too). Pixel values are scaled only by a transform, e.g.
      ``transform=v2.ToDtype(torch.float32, scale=True)``;
    - ``train_transform`` augments training samples only, each sample with
      its own random parameters; prediction, embeddings and every query
      strategy see inputs through ``transform`` alone;
    - inference (``predict_proba``, ``embed``, ``features`` and every query
      strategy's scoring) runs in batches of ``inference_batch_size``, apart
      from the training ``batch_size``, through one loop: every forward
      pass of inference (``forward_iter``, :meth:`iter_proba`,
      :meth:`iter_features`, :meth:`iter_logits`, the head nets' outputs)
      calls skorch's ``evaluation_step`` once per batch and pass, so a
      subclass that overrides it (test-time augmentation, temperature
      scaling) changes predictions, embeddings, features and the scores
      computed from them alike (dynamicAL's gradients run the module
      themselves, on the inputs of :meth:`iter_batches`);
    - y may hold any labels (integers, strings), which are encoded as
      indices into ``classes_`` for the loss, and ``predict`` returns the
      original labels;
    - when ``classes`` is given and the module class takes a ``num_classes``
      or ``n_classes`` argument that was not set with ``module__...``, the
      module is built with ``len(classes)`` outputs;
    - :meth:`embed` returns the penultimate embedding (the input of the final
      linear layer) and :meth:`features` the outputs of named layers, read
      through forward hooks so that unmodified modules (torchvision models)
      work.

    Parameters
    ----------
    module : torch.nn.Module class or instance
        Prefer a class: ``fit`` then builds fresh weights and ``clone``
        copies no trained state.
    *args
        Further positional arguments of skorch's ``NeuralNetClassifier``.
    criterion : torch criterion class, default=torch.nn.CrossEntropyLoss
        Applied to the logits.
    optimizer : torch optimizer class, default=torch.optim.Adam
    lr : float, default=1e-3
    train_split : callable or None, default=None
        As in skorch; ``None`` trains on all labelled samples.
    classes : array-like or None, default=None
        All class labels, if known before the data shows them.
    embedding_layer : str or None, default=None
        Dotted name of the layer whose *input* is the penultimate embedding;
        by default the last ``nn.Linear`` of the module.
    transform : callable or None, default=None
        Applied to every sample, in training and at inference, before the
        dtype conversion: a torchvision ``transforms.v2`` transform (e.g.
        ``v2.Compose([v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std)])``) or any function of one sample. It
        receives a tensor of the sample's own dtype: array rows, and PIL
        images as uint8 ``(C, H, W)``, are converted first, so that one
        transform serves every kind of X (a transform for PIL images only,
        such as v1's ``ToTensor()``, is refused with an error naming its
        replacement).
    train_transform : callable or None, default=None
        Applied to training samples only, after ``transform`` (e.g.
        ``v2.Compose([v2.RandomCrop(28, padding=4),
        v2.RandomHorizontalFlip()])``). Each sample is transformed on its
        own, in the ``DataLoader``'s workers when it has some.
    inference_batch_size : int, default=512
        Samples per batch when the net predicts, embeds or scores a pool.
        An explicit ``iterator_valid__batch_size`` takes precedence.
    verbose : int, default=0
    **kwargs
        Any other skorch ``NeuralNetClassifier`` argument (``max_epochs``,
        ``batch_size``, ``device``, ``callbacks``, ``module__*``,
        ``iterator_train__num_workers``, ``iterator_valid__pin_memory``,
        ...). The ``iterator_train__*`` and ``iterator_valid__*`` arguments
        reach the ``DataLoader`` of training and of inference. With
        ``iterator_*__pin_memory=True`` the batches are copied to the GPU
        without blocking; memory is not pinned by default (on an H200,
        pinning made an entropy query over 200,000 uint8 images slower:
        1.105x a plain loop against 0.958x unpinned, with 4 loader workers).

    Attributes
    ----------
    module_ : torch.nn.Module
        The fitted module.
    classes_ : ndarray of shape (n_classes,)
        The class labels.

    Examples
    --------
    >>> import numpy as np
    >>> import skal
    >>> X = np.random.RandomState(0).randn(60, 4)          # float64 is fine
    >>> y = np.where(X[:, 0] > 0, "pos", "neg")             # so are strings
    >>> net = skal.NeuralNetClassifier(
    ...     skal.nets.MLP, classes=["neg", "pos"], max_epochs=5
    ... ).fit(X, y)
    >>> net.classes_.tolist()
    ['neg', 'pos']
    >>> set(net.predict(X).tolist()) <= {"neg", "pos"}
    True
    >>> net.embed(X).shape
    (60, 100)
    """

    # checked by initialize, before anything is built or trained; skorch's
    # other parameters are checked by skorch and torch
    _parameter_constraints: dict = {
        "max_epochs": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [
            Interval(Integral, 1, None, closed="left"),
            Options({-1}, kind=Integral),
        ],
        "lr": [Interval(Real, 0, None, closed="left"), torch.Tensor],
        "embedding_layer": [str, None],
        "inference_batch_size": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        module,
        *args,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        train_split=None,
        classes=None,
        embedding_layer=None,
        transform=None,
        train_transform=None,
        inference_batch_size=512,
        verbose=0,
        **kwargs,
    ):
        kwargs.setdefault("iterator_train__shuffle", True)
        super().__init__(
            module,
            *args,
            criterion=criterion,
            optimizer=optimizer,
            lr=lr,
            train_split=train_split,
            classes=classes,
            verbose=verbose,
            **kwargs,
        )
        self.embedding_layer = embedding_layer
        self.transform = transform
        self.train_transform = train_transform
        self.inference_batch_size = inference_batch_size

    # the key of the input in a dict sample (the head nets add an index)
    _sample_key = None
    # an active-learning round's quantities, recorded in each epoch's history
    # row while ActiveLearner trains the net (see skal._rounds)
    _round_values = None

    def __setattr__(self, name, value):
        # transforms may be torch modules (torchvision v2); they are
        # parameters, not components that skorch would move and train
        if name in ("transform", "train_transform"):
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)

    def _get_param_names(self):
        # the transforms are added by get_params as they are: sklearn would
        # take an object with a get_params method for an estimator and
        # expand it, and torchvision's random transforms (v2.RandomCrop,
        # RandomResizedCrop, RandomRotation) have a static get_params that
        # draws crop or angle parameters
        return [n for n in super()._get_param_names() if n not in _TRANSFORM_PARAMS]

    def get_params(self, deep=True, **kwargs):
        """The parameters, as sklearn's ``get_params``; transforms as given.

        Parameters
        ----------
        deep : bool, default=True
            Also return the parameters of contained estimators (callbacks);
            ``transform`` and ``train_transform`` are returned as they are,
            never expanded.
        **kwargs : dict
            Passed on to skorch's ``get_params``.

        Returns
        -------
        params : dict
        """
        params = super().get_params(deep=deep, **kwargs)
        # skorch lists its internal bookkeeping set among the parameters;
        # __init__ rebuilds it from the other parameters.
        params.pop("_params_to_validate", None)
        for name in _TRANSFORM_PARAMS:
            params[name] = getattr(self, name)
        return params

    def __sklearn_clone__(self):
        """A clone as :func:`sklearn.base.clone` makes it, callbacks that hold
        what cannot be copied included.

        ``clone`` deep-copies every parameter. A callback holding a
        ``SummaryWriter`` (skorch's ``TensorBoard``), a lock or an open file
        cannot be deep-copied, and the clone that ``ActiveLearner.fit``,
        the simulations and ``GridSearchCV`` make would fail with ``cannot
        pickle '_thread.lock' object``. Such a callback is cloned with its
        other parameters copied and those that cannot be copied shared: the
        clone's ``TensorBoard`` writes through the user's writer, as the net
        itself does when fitted directly. Everything else is cloned exactly
        as sklearn does, except the transforms: they are deep-copied rather
        than cloned as estimators (sklearn would call a torchvision random
        transform's static ``get_params``).

        Returns
        -------
        net : NeuralNetClassifier
            Unfitted, with the same parameters.
        """
        params = self.get_params(deep=False)
        for name, value in params.items():
            if name in _TRANSFORM_PARAMS:
                params[name] = copy.deepcopy(value)
            elif name == "callbacks" and isinstance(value, list | tuple):
                params[name] = type(value)(_clone_callback(cb) for cb in value)
            else:
                params[name] = clone(value, safe=False)
        new = type(self)(**params)
        for attr in ("_metadata_request", "_sklearn_output_config"):
            if attr in vars(self):
                setattr(new, attr, copy.deepcopy(vars(self)[attr]))
        return new

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        """Start the epoch's history row, with the active-learning round's
        quantities when :class:`skal.ActiveLearner` trains the net.

        The keys (``al/round``, ``al/n_labeled``, ``al/query_seconds``,
        ``al/score_mean``, ...) are in the row before any callback reads it,
        so skorch's loggers (``TensorBoard``, ``WandbLogger``, ...) log them
        with the losses.
        """
        super().on_epoch_begin(
            net, dataset_train=dataset_train, dataset_valid=dataset_valid, **kwargs
        )
        for key, value in (self._round_values or {}).items():
            self.history.record(key, value)

    @property
    def _default_callbacks(self):
        callbacks = dict(super()._default_callbacks)
        callbacks["valid_acc"] = EpochScoring(
            _encoded_accuracy, name="valid_acc", lower_is_better=False
        )
        return list(callbacks.items())

    def initialize(self):
        """Initialize as skorch does, after checking the parameters and the device.

        Returns
        -------
        self : NeuralNetClassifier

        Raises
        ------
        TypeError, ValueError
            For a parameter of a bad type or value (see ``_parameter_constraints``
            and the transforms), before anything is built.
        """
        check_params(self)
        for name in _TRANSFORM_PARAMS:
            _check_transform(name, getattr(self, name))
        device = self.device
        if device is not None and str(device).startswith("cuda"):
            if not torch.cuda.is_available():
                raise ValueError(
                    f"device={device!r} but torch sees no CUDA device (torch "
                    f"{torch.__version__}, built for CUDA {torch.version.cuda}); use "
                    "device='cpu', or install a CUDA build of torch on a GPU machine"
                )
        return super().initialize()

    def set_params(self, **kwargs):
        """Set parameters as skorch does, loader options on a fitted net too.

        skorch re-initializes the module, criterion or optimizer when their
        parameters change on an initialized net, and raises for parameters
        of no component (``iterator_train__*``, ``iterator_valid__*``,
        ``dataset__*``). Those only configure the next ``DataLoader`` or
        dataset, so here they are set without re-initializing anything: the
        fitted weights stay.

        Parameters
        ----------
        **kwargs : dict
            Parameter names and values, as in ``sklearn``'s ``set_params``
            (``<component>__<name>`` for a component's parameters).

        Returns
        -------
        self : NeuralNetClassifier

        Examples
        --------
        >>> import numpy as np
        >>> import skal
        >>> X = np.random.RandomState(0).randn(40, 3).astype(np.float32)
        >>> net = skal.NeuralNetClassifier(skal.nets.MLP, max_epochs=1)
        >>> net = net.fit(X, (X[:, 0] > 0).astype(int))
        >>> net = net.set_params(iterator_valid__batch_size=8)
        >>> net.predict_proba(X).shape
        (40, 2)
        """
        loader = {k: v for k, v in kwargs.items() if k.startswith(_LOADER_PREFIXES)}
        if not loader or not getattr(self, "initialized_", False):
            return super().set_params(**kwargs)
        for key in loader:
            if key.endswith("_"):
                raise ValueError(
                    f"invalid parameter {key!r}: parameter names do not end "
                    "with '_' (fitted attributes do)"
                )
        rest = {k: v for k, v in kwargs.items() if k not in loader}
        if rest:
            super().set_params(**rest)
        for key, value in loader.items():
            setattr(self, key, value)
        return self

    def initialize_module(self):
        """Build the module, giving it one output per declared class."""
        kwargs = self.get_params_for("module")
        if self.classes is not None and not isinstance(self.module, nn.Module):
            name = _class_count_param(self.module)
            if name is not None and name not in kwargs:
                kwargs[name] = len(self.classes)
        self.module_ = self.initialized_instance(self.module, kwargs)
        return self

    def get_loss(self, y_pred, y_true, *args, **kwargs):
        """The criterion on the logits (the first element of a tuple output)."""
        logits = logits_of(y_pred)
        _check_logits_width(self, logits)
        return super().get_loss(logits, y_true, *args, **kwargs)

    def check_data(self, X, y):
        """Check the data as skorch does; refuse a single class.

        A module with one output has a softmax of 1 for every sample: every
        prediction is that class and every query a tie. As sklearn's
        classifiers do, fitting on one class is refused unless the other
        classes are declared with ``classes``.

        Parameters
        ----------
        X : array-like, tensor or Dataset
        y : array-like or None
        """
        super().check_data(X, y)
        if self.classes is not None:
            if len(self.classes) < 2:
                raise ValueError(
                    f"classes={list(self.classes)!r} holds one class; a "
                    "classifier needs at least 2 classes"
                )
            return
        inferred = getattr(self, "classes_inferred_", None)
        if inferred is not None and len(inferred) < 2:
            raise ValueError(
                f"y holds one class ({inferred.tolist()!r}); a classifier "
                "needs at least 2 classes. If the others are known but not in "
                "this labelled set yet, declare them all with classes=[...]"
            )

    def fit(self, X, y=None, **fit_params):
        """Initialize and train; ``y=None`` reads the labels of a Dataset's items.

        Parameters
        ----------
        X : array-like, tensor or torch Dataset
        y : array-like or None, default=None
            Required unless X is a Dataset of ``(x, y)`` items.
        **fit_params : dict
            Passed on to skorch's ``fit`` (and to the module's forward).

        Returns
        -------
        self : NeuralNetClassifier
        """
        return super().fit(X, y, **fit_params)

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Train on, keeping the weights; ``y=None`` as in :meth:`fit`.

        Parameters
        ----------
        X : array-like, tensor or torch Dataset
        y : array-like or None, default=None
            Required unless X is a Dataset of ``(x, y)`` items.
        classes : array-like or None, default=None
            As in skorch (unused by the classifier: ``classes`` is a
            constructor parameter).
        **fit_params : dict
            Passed on to skorch's ``partial_fit``.

        Returns
        -------
        self : NeuralNetClassifier
        """
        X = as_item_dataset(X)  # a datasets.Dataset: read through a DictDataset
        if y is None and is_torch_dataset(X):
            y = dataset_labels(X)
        return super().partial_fit(X, y, classes=classes, **fit_params)

    def get_dataset(self, X, y=None):
        """The samples, read one by one; y encoded as indices into ``classes_``.

        Arrays, tensors and torch Datasets become a
        :class:`~torch.utils.data.Dataset` that reads each sample as a tensor
        of its own dtype and applies ``transform`` (batches are converted in
        :meth:`infer`); other inputs (DataFrames, dicts) go through skorch's
        ``Dataset`` as float32.

        Parameters
        ----------
        X : array-like, tensor or Dataset
        y : array-like of shape (n_samples,) or None, default=None

        Returns
        -------
        dataset : torch.utils.data.Dataset
        """
        if isinstance(X, SampleDataset | TrainTransformed):
            return X
        if y is not None:
            y = self.encode_labels(y)
        if is_torch_dataset(X) or isinstance(X, np.ndarray | torch.Tensor):
            return SampleDataset(X, y, transform=self.transform)
        if is_dataset(X):
            return X
        return super().get_dataset(_as_float32(X), y)

    def infer(self, x, **fit_params):
        """Move the batch to the device, convert its dtype, run the module.

        Parameters
        ----------
        x : torch.Tensor, ndarray or dict of them
            One batch, as the DataLoader yields it.
        **fit_params : dict
            Passed on to the module's forward.

        Returns
        -------
        output : torch.Tensor or tuple of torch.Tensor
            The module's output.
        """
        return super().infer(self._module_input(x), **fit_params)

    def _module_input(self, x):
        """A batch's X on the net's device, in the dtype the module takes."""
        return to_module_dtype(to_device(x, self.device), self._embeds_tokens())

    def _embeds_tokens(self):
        """Whether integer batches reach the module as they are: it has an
        ``nn.Embedding`` or ``nn.EmbeddingBag`` (token ids); integers are
        otherwise measurements, converted to float32 like every number."""
        module = getattr(self, "module_", None)
        return module is not None and any(
            isinstance(m, nn.Embedding | nn.EmbeddingBag) for m in module.modules()
        )

    def get_iterator(self, dataset, training=False):
        """skorch's DataLoader, with ``train_transform`` for training.

        Training loaders apply ``train_transform`` to each sample; every other
        pass reads batches of ``inference_batch_size``.

        A ``DataLoader`` draws a base seed for its workers from torch's global
        generator each time it is iterated, even with no worker and no
        shuffling. Evaluation loaders get a private generator instead, so that
        ``predict``, ``predict_proba``, ``score`` and :meth:`embed` leave the
        global random state untouched.

        Every inference loader of the net is built here (or, for
        :meth:`iter_batches` with its own batch size, in the same helper),
        so that a progress bar counts each batch any query strategy reads.

        Parameters
        ----------
        dataset : torch.utils.data.Dataset
        training : bool, default=False
            Whether the loader feeds training (shuffled, transformed) or
            inference.

        Returns
        -------
        iterator : torch.utils.data.DataLoader
        """
        if training:
            if self.train_transform is not None:
                dataset = TrainTransformed(
                    dataset, self.train_transform, key=self._sample_key
                )
            kwargs = self._loader_kwargs("iterator_train")
            kwargs.setdefault("batch_size", self.batch_size)
            if kwargs["batch_size"] == -1:
                kwargs["batch_size"] = len(dataset)
            return self.iterator_train(dataset, **kwargs)
        return self._inference_loader(dataset)

    def _inference_loader(self, dataset, batch_size=None):
        """The inference DataLoader; ``batch_size`` overrides every other
        setting. Counted by :func:`skal._progress.observe_inference_batches`."""
        kwargs = self._loader_kwargs("iterator_valid")
        kwargs.setdefault("batch_size", self.inference_batch_size or self.batch_size)
        if batch_size is not None:
            kwargs["batch_size"] = batch_size
        if kwargs["batch_size"] == -1:
            kwargs["batch_size"] = len(dataset)
        return observed(_with_private_generator(self.iterator_valid(dataset, **kwargs)))

    def _loader_kwargs(self, prefix):
        """The loader's arguments; a torch DataLoader stacks samples with
        :func:`~skal._data.collate_samples` unless ``collate_fn`` is set."""
        kwargs = self.get_params_for(prefix)
        iterator = getattr(self, prefix)
        if isinstance(iterator, type) and issubclass(
            iterator, torch.utils.data.DataLoader
        ):
            kwargs.setdefault("collate_fn", collate_samples)
        return kwargs

    def encode_labels(self, y) -> np.ndarray:
        """Indices of the labels ``y`` in ``classes_`` (int64).

        Parameters
        ----------
        y : array-like or torch.Tensor of shape (n_samples,)

        Returns
        -------
        indices : ndarray of shape (n_samples,)

        Raises
        ------
        ValueError
            If ``y`` holds a label that is not in ``classes_``.
        """
        hint = (
            "declare every class up front with classes=..."
            if self.classes is None
            else "add them to classes=..."
        )
        return encode_labels(y, self.classes_, owner="the net's", hint=hint)

    def iter_proba(self, X):
        """Yield the class probabilities batch by batch (eval mode, no grad).

        The loop behind :meth:`predict_proba`: strategies that reduce each
        batch to one score per sample use it to keep one batch of
        probabilities in memory rather than ``(n_samples, n_classes)``.

        Parameters
        ----------
        X : array-like, tensor or torch Dataset

        Yields
        ------
        proba : ndarray of shape (batch_size, n_classes)
            The prediction nonlinearity (softmax) of the logits, on the CPU.
        """
        nonlin = self._get_predict_nonlinearity()
        # through forward_iter, so that skorch's scoring callbacks, which
        # replace it with their cached predictions, are served from the cache
        batches = self.forward_iter(
            self.get_dataset(X), training=False, device=self.device
        )
        probas = (nonlin(logits_of(yp)) for yp in batches)
        # one batch ahead: the device computes the next batch while the host
        # copies this one back (on the CPU this changes nothing)
        for proba in _one_ahead(probas):
            yield to_numpy(proba)

    def predict_proba(self, X):
        """Class probabilities: the softmax of the logits, batch by batch.

        Each batch's probabilities (:meth:`iter_proba`) are written into one
        preallocated array: memory is the ``(n_samples, n_classes)`` result
        plus one batch, and no list of per-batch arrays is kept (which, with
        glibc's allocator, fragments the heap into hundreds of megabytes over
        a large pool).

        Parameters
        ----------
        X : array-like, tensor or torch Dataset

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        dataset = self.get_dataset(X)
        out = None
        start = 0
        for p in self.iter_proba(dataset):
            if out is None:
                out = np.empty((len(dataset), *p.shape[1:]), dtype=p.dtype)
            out[start : start + len(p)] = p
            start += len(p)
        if out is None:
            return np.empty((0, len(self.classes_)), dtype=np.float32)
        return out

    def predict(self, X):
        """Predicted class labels (elements of ``classes_``).

        Parameters
        ----------
        X : array-like, tensor or Dataset

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        """
        return np.asarray(self.classes_)[self.predict_proba(X).argmax(axis=1)]

    def iter_features(self, X, layers=(), *, embedding=False, device=None):
        """Yield the logits and tapped features of each evaluation batch.

        The module runs in eval mode without gradients.

        Parameters
        ----------
        X : array-like, tensor or Dataset
            Input data.
        layers : iterable of str, default=()
            Dotted names of layers whose outputs are recorded.
        embedding : bool, default=False
            Also record the penultimate embedding (flattened input of
            ``embedding_layer``) under the key ``"embedding"``.
        device : str or torch.device or None, default=None
            Where the tensors are yielded; ``None`` keeps them on the net's
            device.

        Yields
        ------
        logits : torch.Tensor of shape (batch_size, n_classes)
        features : dict of str to torch.Tensor
        """
        self.check_is_fitted()
        layers = list(layers)
        emb = (
            [self.embedding_layer or last_linear_name(self.module_)]
            if embedding
            else []
        )
        for name in (*layers, *emb):  # a wrong name fails before any batch
            find_module(self.module_, name)

        def step(batch):
            # the hooks are on the module during this batch's forward only
            with (
                LayerTap(self.module_, layers) as out_tap,
                LayerTap(self.module_, emb, record="input") as in_tap,
            ):
                logits = logits_of(self.evaluation_step(batch, training=False))
            feats = {name: out_tap.features[name] for name in layers}
            if embedding:
                feats["embedding"] = in_tap.features[emb[0]].flatten(1)
            return logits, feats

        device = self.device if device is None else device
        yield from self._evaluation_loop(self.get_dataset(X), step, device=device)

    def iter_batches(self, X, y=None, batch_size=None):
        """Yield the inputs batch by batch, as the module takes them.

        The loop of every inference pass that is not a plain forward (the
        gradient computations of dynamicAL): the samples go through
        ``transform`` (never ``train_transform``) in batches of
        ``inference_batch_size``, in order.

        Parameters
        ----------
        X : array-like, tensor or torch Dataset
        y : array-like of int or None, default=None
            Encoded labels yielded beside the inputs.
        batch_size : int or None, default=None
            Overrides the inference batch size for this loop.

        Yields
        ------
        x : torch.Tensor (or dict of tensors) on the net's device
        y : torch.Tensor of int64 on the net's device, or None
        """
        # the plain samples: a head net's dataset would add their indices
        dataset = NeuralNetClassifier.get_dataset(self, X)
        start = 0

        def step(batch):
            nonlocal start
            xb = self._module_input(batch[0])
            n = len(next(iter(xb.values()))) if isinstance(xb, dict) else len(xb)
            yb = None
            if y is not None:
                yb = torch.as_tensor(
                    np.asarray(y[start : start + n]), device=self.device
                )
            start += n
            return xb, yb

        yield from self._evaluation_loop(dataset, step, batch_size=batch_size)

    def iter_logits(self, X, n_passes=1, train_modules=()):
        """Yield the logits of each inference batch, ``n_passes`` times over.

        The module runs in eval mode without gradients, except the modules in
        ``train_modules``, which are in training mode (dropout modules for
        Monte Carlo dropout); every module's mode is restored afterwards.

        Parameters
        ----------
        X : array-like, tensor or torch Dataset
        n_passes : int, default=1
        train_modules : iterable of torch.nn.Module, default=()

        Yields
        ------
        logits : torch.Tensor of shape (n_passes, batch_size, n_classes)
        """
        self.check_is_fitted()
        train_modules = list(train_modules)

        def step(batch):
            with _training_in_forward(self.module_, train_modules):
                passes = [
                    logits_of(self.evaluation_step(batch, training=False))
                    for _ in range(n_passes)
                ]
            return torch.stack(passes)

        yield from self._evaluation_loop(self.get_dataset(X), step, restore_modes=True)

    def forward_iter(self, X, training=False, device="cpu"):
        """Yield the module's output for each batch, as skorch does.

        skorch's ``forward_iter``, run by the net's evaluation loop: each
        batch is one call of ``evaluation_step``, and the batches are those
        of :meth:`get_iterator`, counted by a progress bar.

        Parameters
        ----------
        X : array-like, tensor or torch Dataset
        training : bool, default=False
            Train mode and gradients (and the training loader), or eval mode
            without gradients.
        device : str or torch.device or None, default="cpu"
            Where the outputs are yielded; ``None`` keeps them where the
            module computed them.

        Yields
        ------
        output : torch.Tensor or tuple of torch.Tensor
            The module's output for one batch.
        """
        yield from self._evaluation_loop(
            self.get_dataset(X),
            partial(self.evaluation_step, training=training),
            training=training,
            device=device,
        )

    def _evaluation_loop(
        self,
        dataset,
        step,
        *,
        training=False,
        batch_size=None,
        device=None,
        restore_modes=False,
    ):
        """Yield ``step(batch)`` for each batch of ``dataset``.

        The one loop of every pass over data outside training: the public
        iterators are per-batch steps run by it. The batches come from
        :meth:`get_iterator` (the inference loader unless ``training``;
        ``batch_size`` overrides its batch size), so that a progress bar
        counts each of them. Each step runs with gradients on only when
        ``training``; the steps that run the module call ``evaluation_step``,
        which puts the net in eval mode and leaves it so, as skorch does.
        With ``restore_modes`` every module of the net is put back in the
        mode it had before the step, also when the step raises. Grad mode
        and modes are set around each step, not across the yields: code run
        between two batches runs in its own modes. The step's result is
        moved to ``device`` (``None``: left where it is).
        """
        if batch_size is None:
            loader = self.get_iterator(dataset, training=training)
        else:
            loader = self._inference_loader(dataset, batch_size)
        for batch in loader:
            with self._modes_kept(restore_modes), torch.set_grad_enabled(training):
                out = step(batch)
            yield skorch.utils.to_device(out, device)

    @contextmanager
    def _modes_kept(self, enabled=True):
        """Restore the train/eval mode of every module of the net's
        components (module, auxiliary heads, criterion) on exit."""
        modes = []
        if enabled:
            for name in self._modules + self._criteria:
                component = getattr(self, name + "_", None)
                if isinstance(component, nn.Module):
                    modes += [(m, m.training) for m in component.modules()]
        try:
            yield
        finally:
            for module, training in modes:
                module.training = training

    def embed(self, X) -> np.ndarray:
        """The penultimate embedding: the input of ``embedding_layer``.

        Parameters
        ----------
        X : array-like, tensor or Dataset

        Returns
        -------
        embedding : ndarray of shape (n_samples, n_features_embedding)
        """
        parts = [f["embedding"] for _, f in self.iter_features(X, embedding=True)]
        return to_numpy(torch.cat(parts)) if parts else np.empty((0, 0))

    def features(self, X, layers) -> dict:
        """Outputs of the named layers, one array per layer.

        Parameters
        ----------
        X : array-like, tensor or Dataset
        layers : iterable of str
            Dotted names as in ``module_.named_modules()``.

        Returns
        -------
        features : dict of str to ndarray
        """
        layers = list(layers)
        batches = [f for _, f in self.iter_features(X, layers, device="cpu")]
        return {
            name: to_numpy(torch.cat([b[name] for b in batches])) for name in layers
        }


def _clone_callback(entry):
    """A callback (or ``(name, callback)``) cloned; a parameter that cannot be
    deep-copied (a writer, a lock, a file) is shared with the original, and a
    callback that is not a parametrized object is shared whole."""
    if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str):
        return entry[0], _clone_callback(entry[1])
    try:
        return clone(entry, safe=False)
    except (TypeError, pickle.PicklingError):
        if isinstance(entry, type) or not hasattr(entry, "get_params"):
            return entry
    params = {
        name: _copied_or_shared(value)
        for name, value in entry.get_params(deep=False).items()
    }
    return type(entry)(**params)


def _copied_or_shared(value):
    try:
        return clone(value, safe=False)
    except (TypeError, pickle.PicklingError):
        return value


def _with_private_generator(iterator):
    """An evaluation loader that leaves torch's global generator alone."""
    if isinstance(iterator, torch.utils.data.DataLoader) and iterator.generator is None:
        iterator.generator = torch.Generator()
    return iterator


def _one_ahead(items):
    """Yield each item once the next one has been computed (the last at the
    end): on a GPU the next batch runs while the caller copies this one."""
    pending = ()
    for item in items:
        yield from pending
        pending = (item,)
    yield from pending


@contextmanager
def _training_in_forward(module, train_modules):
    """Put ``train_modules`` in training mode each time ``module`` starts a
    forward pass, after ``evaluation_step`` has put everything in eval mode
    (Monte Carlo dropout); the caller restores the modes afterwards."""
    if not train_modules:
        yield
        return

    def switch(_module, _args):
        for m in train_modules:
            m.train()

    handle = module.register_forward_pre_hook(switch)
    try:
        yield
    finally:
        handle.remove()


def _encoded_accuracy(net, X, y):
    """Validation accuracy on encoded targets (the dataset holds indices)."""
    return accuracy_score(to_numpy(y), net.predict_proba(X).argmax(axis=1))


def _check_logits_width(net, logits):
    """Raise if the module's logits do not have one column per class.

    Checked before the criterion, which would otherwise fail deep inside
    ``cross_entropy`` (too few outputs) or train a model whose extra columns
    break every later ``predict_proba`` (too many).
    """
    try:
        n_classes = len(net.classes_)
    except AttributeError:  # trained on a Dataset whose labels skorch cannot read
        return
    if logits.ndim == 2 and logits.shape[1] == n_classes:
        return
    module = net.module if isinstance(net.module, type) else type(net.module)
    name = _class_count_param(module)
    if name is not None:
        how = (
            f"pass module__{name}={n_classes}, or leave module__{name} unset and "
            f"declare classes=... so that skal sets it"
        )
    else:
        how = (
            f"pass its output width with module__<name>={n_classes}, or give "
            "the module class a num_classes (or n_classes) argument, which skal "
            "sets from classes=..."
        )
    raise ValueError(
        f"the module {module.__name__} returned logits of shape "
        f"{tuple(logits.shape)}, but there are {n_classes} classes; it must "
        f"return (batch_size, {n_classes}) logits, one per class: {how}"
    )


def _check_transform(name, value):
    """Refuse a transform that cannot be applied to a sample."""
    if value is None:
        return
    if isinstance(value, type):
        raise TypeError(
            f"{name} must be a transform object or function, got the class "
            f"{value.__module__}.{value.__qualname__}; create one, e.g. "
            f"{name}={value.__name__}(...)"
        )
    if not callable(value):
        raise TypeError(
            f"{name} must be a callable applied to one sample (a torchvision "
            f"v2 transform or a function), got {value!r} of type "
            f"{type(value).__name__}"
        )


def _class_count_param(module_cls):
    try:
        params = inspect.signature(module_cls).parameters
    except (TypeError, ValueError):
        return None
    for name in _CLASS_COUNT_PARAMS:
        if name in params:
            return name
    return None


def _as_float32(X):
    if isinstance(X, torch.Tensor):
        return X.float() if X.is_floating_point() else X
    if hasattr(X, "iloc") and hasattr(X, "to_numpy"):
        return X.to_numpy(dtype=np.float32, copy=True)
    if isinstance(X, np.ndarray) and X.dtype.kind == "f" and X.dtype != np.float32:
        return X.astype(np.float32)
    return X
