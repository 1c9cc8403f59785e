"""Stopping criteria's state in a labelling session's directory.

A criterion compares the models of successive rounds (the kappa between
two models' predictions on a stop set, the change of a statistic over a
window): its state is what it saw of the earlier models. A session keeps
that state beside its log, so that a reopened session, or another process
on the same directory, continues the criteria's windows instead of starting
them again. The state is derived (it can always be rebuilt by labelling on),
so it is written after each decision without a place in the answers' log.

A criterion is stored under its position in the list of criteria, its class
and its parameters: a criterion configured otherwise starts afresh. Its stop
set is stored as the pool rows it was drawn from, not as their contents,
and is read back from the pool.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np

from ._persistence import (
    json_digest,
    restore_strategy_state,
    strategy_state,
    write_file,
)
from .stopping import StoppingCriterion

_DIR = "stopping"
_FORMAT = 1


class CriteriaStore:
    """The saved state of a session's stopping criteria.

    Parameters
    ----------
    directory : path-like
        The session's directory.
    """

    def __init__(self, directory):
        self.directory = Path(directory) / _DIR
        # id of a criterion -> the pool rows of its stop set (None: no stop
        # set); only criteria whose stop set is known in pool rows are saved
        self._stop_rows: dict[int, list | None] = {}
        # (id of a criterion, its position) -> the n_updates_ last written
        # (or read): asking again without a new model writes nothing
        self._written: dict[tuple, int] = {}

    def restore(self, criteria, rows):
        """Give each fresh criterion the state saved for it, if any.

        ``rows(indices)`` returns the pool rows at ``indices`` (the stop
        sets). A criterion that has seen a model already keeps its own
        state; one whose saved state is unreadable starts afresh, with a
        warning.
        """
        for position, criterion in enumerate(criteria):
            if not isinstance(criterion, StoppingCriterion) or getattr(
                criterion, "n_updates_", 0
            ):
                continue
            path = self.directory / f"{_key(position, criterion)}.json"
            if not path.exists():
                continue
            try:
                saved = _read(path)
                stop_rows = saved["stop_rows"]
                restore_strategy_state(
                    criterion, saved["state"], _decode_arrays(saved["arrays"])
                )
            except (ValueError, KeyError, TypeError) as exc:
                for name in list(vars(criterion)):
                    if name.endswith("_") and not name.startswith("_"):
                        delattr(criterion, name)
                warnings.warn(
                    f"the saved state of stopping criterion {criterion!r} in "
                    f"{path} is unreadable ({exc}); it starts afresh",
                    RuntimeWarning,
                    stacklevel=3,
                )
                continue
            if stop_rows is not None:
                criterion.X_stop_ = rows(np.asarray(stop_rows, dtype=np.int64))
            self._stop_rows[id(criterion)] = stop_rows
            self._written[id(criterion), position] = criterion.n_updates_

    def save(self, criteria, unlabeled, fresh):
        """Write the state of the criteria after an update.

        ``unlabeled`` are the pool rows this update showed them, and
        ``fresh`` the ids of the criteria that had seen no model before it
        (their stop set, if any, was drawn from ``unlabeled`` now).
        """
        self.directory.mkdir(exist_ok=True)
        for position, criterion in enumerate(criteria):
            if not isinstance(criterion, StoppingCriterion):
                continue
            if id(criterion) in fresh:
                drawn = getattr(criterion, "stop_set_rows_", None)
                self._stop_rows[id(criterion)] = (
                    None if drawn is None else unlabeled[drawn].tolist()
                )
            if id(criterion) not in self._stop_rows:
                continue  # updated before the session saw it: stop set unknown
            written = self._written.get((id(criterion), position))
            if id(criterion) not in fresh and written == criterion.n_updates_:
                continue  # no new model since the last write
            plain = copy.copy(criterion)
            plain.__dict__.pop("X_stop_", None)
            state, arrays = strategy_state(plain)
            record = {
                "format": _FORMAT,
                "criterion": _describe(criterion),
                "stop_rows": self._stop_rows[id(criterion)],
                "state": state,
                "arrays": _encode_arrays(arrays),
            }
            record["checksum"] = json_digest(record)
            payload = json.dumps(record).encode()
            path = self.directory / f"{_key(position, criterion)}.json"
            write_file(path, lambda fh, payload=payload: fh.write(payload))
            self._written[id(criterion), position] = criterion.n_updates_


def _describe(criterion):
    params = criterion.get_params(deep=False)
    return {
        "class": f"{type(criterion).__module__}.{type(criterion).__qualname__}",
        "params": {k: repr(v) for k, v in sorted(params.items())},
    }


def _key(position, criterion):
    return f"{position}-{json_digest(_describe(criterion))[:16]}"


def _read(path):
    record = json.loads(path.read_bytes())
    checksum = record.pop("checksum")
    if checksum != json_digest(record):
        raise ValueError("its checksum does not match (edited or damaged)")
    if record.get("format") != _FORMAT:
        raise ValueError(f"format {record.get('format')!r}, expected {_FORMAT}")
    return record


def _encode_arrays(arrays):
    return {
        key: {
            "dtype": value.dtype.str,
            "shape": list(value.shape),
            "data": value.ravel().tolist(),
        }
        for key, value in arrays.items()
    }


def _decode_arrays(encoded):
    return {
        key: np.asarray(item["data"], dtype=np.dtype(item["dtype"])).reshape(
            item["shape"]
        )
        for key, item in encoded.items()
    }
