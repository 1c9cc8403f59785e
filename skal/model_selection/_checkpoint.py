"""Per-round checkpoints of a simulated active-learning run.

A run directory holds ``state.json`` (the commit point: round, labelled
indices in the order they were labelled, scores, the learner's random state
and any scalar strategy state), an ``.npz`` file with the arrays (random
generator keys, array-valued strategy state) and, for network learners, a
``torch.save`` of the modules' ``state_dict``. Arrays load with
``allow_pickle=False`` and weights with ``torch.load(weights_only=True)``:
nothing is unpickled.

Files of a round are written first and ``state.json`` is replaced atomically
last, so a run killed at any moment leaves the previous round's complete
checkpoint behind.
"""

from __future__ import annotations

import json
import numbers
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from skorch import NeuralNet

FORMAT = 1
_STATE = "state.json"


def net_modules(net: NeuralNet) -> dict:
    """The torch modules a skorch net registered (module, extra heads, criteria)."""
    names = list(getattr(net, "_modules", ["module"])) + list(
        getattr(net, "_criteria", [])
    )
    return {
        name: getattr(net, name + "_")
        for name in names
        if isinstance(getattr(net, name + "_", None), torch.nn.Module)
    }


def state_dicts(net: NeuralNet) -> dict:
    """CPU copies of every registered module's ``state_dict``."""
    return {
        name: {k: v.detach().cpu().clone() for k, v in mod.state_dict().items()}
        for name, mod in net_modules(net).items()
    }


def load_state_dicts(net: NeuralNet, states: dict) -> None:
    """Load what :func:`state_dicts` returned into an initialized net."""
    modules = net_modules(net)
    missing = sorted(set(states) - set(modules))
    if missing:
        raise ValueError(
            f"checkpoint holds weights of modules {missing} that the network "
            f"does not have (it has {sorted(modules)})"
        )
    for name, state in states.items():
        modules[name].load_state_dict(state)


def _strategy_state(strategy) -> tuple[dict, dict]:
    """Split a strategy's fitted attributes into JSON scalars and arrays."""
    scalars, arrays = {}, {}
    for name, value in vars(strategy).items():
        if not name.endswith("_") or name.startswith("_"):
            continue
        if value is None or isinstance(value, bool | str):
            scalars[name] = value
        elif isinstance(value, numbers.Integral):
            scalars[name] = int(value)
        elif isinstance(value, numbers.Real):
            scalars[name] = float(value)
        elif isinstance(value, np.ndarray) and value.dtype != object:
            arrays["strategy__" + name] = value
        else:
            warnings.warn(
                f"strategy attribute {name!r} of type {type(value).__name__} is "
                "not checkpointed (only numbers, strings and numeric arrays are); "
                "a resumed run starts with it as the strategy left it at fit",
                UserWarning,
                stacklevel=3,
            )
    return scalars, arrays


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RunCheckpoint:
    """Reads and writes the checkpoints of one simulated run.

    Parameters
    ----------
    directory : path-like
        The run's own directory (created on first save).
    keep_weights : bool, default=False
        Keep every round's weights (needed to rebuild the per-round models of
        :class:`ActiveLearningSimulation`); otherwise only the latest.
    """

    def __init__(self, directory, keep_weights: bool = False):
        self.directory = Path(directory)
        self.keep_weights = keep_weights

    def load(self) -> dict | None:
        """The latest committed state, or None if the run has not started."""
        path = self.directory / _STATE
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        if state.get("format") != FORMAT:
            raise ValueError(
                f"checkpoint {path} has format {state.get('format')!r}; this "
                f"version of skal reads format {FORMAT}"
            )
        with np.load(self.directory / state["arrays"], allow_pickle=False) as npz:
            state["_arrays"] = {k: npz[k] for k in npz.files}
        return state

    def weights(self, filename: str) -> dict:
        """Load one round's weights safely (``weights_only=True``)."""
        return torch.load(
            self.directory / filename, map_location="cpu", weights_only=True
        )

    def save(self, round_, order, scores, learner, net=None) -> None:
        """Commit the state after ``round_`` (0 is the initial fit)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        kind, keys, pos, has_gauss, cached = learner.random_state_.get_state()
        scalars, arrays = _strategy_state(learner.strategy_)
        arrays["rng_keys"] = np.asarray(keys)
        arrays["order"] = np.asarray(order, dtype=np.int64)
        arrays_name = f"state-r{round_}.npz"
        _write_atomic(self.directory / arrays_name, lambda fh: np.savez(fh, **arrays))
        weights_name = None
        if net is not None:
            weights_name = f"weights-r{round_}.pt"
            states = state_dicts(net)
            _write_atomic(
                self.directory / weights_name, lambda fh: torch.save(states, fh)
            )
        state = {
            "format": FORMAT,
            "round": int(round_),
            "n_labeled": len(order),
            "scores": [float(s) for s in scores],
            "arrays": arrays_name,
            "weights": weights_name,
            "rng": {
                "kind": kind,
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached),
            },
            "strategy": scalars,
        }
        payload = json.dumps(state, indent=1).encode()
        _write_atomic(self.directory / _STATE, lambda fh: fh.write(payload))
        self._prune(round_)

    def _prune(self, round_) -> None:
        for path in self.directory.iterdir():
            stem, _, rest = path.name.partition("-r")
            if stem not in ("state", "weights") or path.suffix == ".tmp":
                continue
            r = int(rest.split(".")[0])
            if r < round_ and not (stem == "weights" and self.keep_weights):
                path.unlink()

    @staticmethod
    def restore_random_state(learner, state) -> None:
        """Put the saved generator and strategy state back into ``learner``."""
        rng = state["rng"]
        learner.random_state_.set_state(
            (
                rng["kind"],
                state["_arrays"]["rng_keys"],
                rng["pos"],
                rng["has_gauss"],
                rng["cached_gaussian"],
            )
        )
        for name, value in state["strategy"].items():
            setattr(learner.strategy_, name, value)
        for key, value in state["_arrays"].items():
            if key.startswith("strategy__"):
                setattr(learner.strategy_, key[len("strategy__") :], value)
