"""Per-round checkpoints of a simulated active-learning run.

A run directory holds ``state.json`` (the commit point: round, scores, the
learner's random state, the strategy's fitted state, a fingerprint of the
code and a SHA-256 checksum of every other file of the round), an ``.npz``
file with the arrays (labelled rows in labelling order, random generator
keys, array-valued strategy state) and, for network learners, a
``torch.save`` of the modules' ``state_dict``.

Why these formats: a checkpoint directory may be shared (a cluster's file
system, a downloaded experiment), so loading it must never run code. Arrays
load with ``allow_pickle=False`` and weights with
``torch.load(weights_only=True)``; everything else is JSON. Why checksums:
``torch.load`` does not verify the zip's CRCs, so flipped bytes in a weights
file load silently as other weights; every file is hashed when written and
verified before anything is read, and ``state.json`` carries a checksum of
its own content.

Why the write order: files of a round are written first, each to a unique
temporary name and then renamed, and ``state.json`` is replaced last, so a
run killed at any moment leaves the previous round's complete checkpoint
behind, and two processes writing the same run never rename each other's
half-written files.

Strategy state is saved with :func:`strategy_state` and put back with
:func:`restore_strategy_state`, functions that other resumable loops (a
labelling session) can use on their own.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch

from .._persistence import (
    CheckpointError,
    file_digest,
    json_digest,
    learner_state,
    load_weights,
    state_dicts,
    write_file,
)

FORMAT = 2
_STATE = "state.json"
# the only names a run writes; anything else named in state.json is refused
_FILE_NAME = re.compile(r"(state-r\d+\.npz|weights-r\d+\.pt)")


def _unusable(directory, reason) -> CheckpointError:
    return CheckpointError(
        f"cannot resume the run checkpointed in {directory}: {reason}. Delete "
        f"that directory to restart this run from scratch (other runs are not "
        "affected)"
    )


# ------------------------------------------------------------------ the run
class RunCheckpoint:
    """Reads and writes the checkpoints of one simulated run.

    Parameters
    ----------
    directory : path-like
        The run's own directory (created on first save).
    keep_weights : bool, default=False
        Keep every round's weights (needed to rebuild the per-round models of
        :class:`ActiveLearningSimulation`); otherwise only the latest.
    code : dict or None, default=None
        Fingerprints of the code the run depends on
        (:func:`code_fingerprints`); recorded at each save and compared at
        load, so that a run never resumes with edited code.
    """

    def __init__(self, directory, keep_weights: bool = False, code=None):
        self.directory = Path(directory)
        self.keep_weights = keep_weights
        self.code = code
        self._files: dict = {}

    def load(self) -> dict | None:
        """The latest committed state, or None if the run has not started.

        Raises
        ------
        CheckpointError
            If a file is missing, truncated or modified, names a path outside
            the run directory, or the code changed since the run was saved.
        """
        path = self.directory / _STATE
        if not path.exists():
            return None
        try:
            state = json.loads(path.read_bytes())
            checksum = state.pop("checksum")
        except (ValueError, UnicodeDecodeError, AttributeError, KeyError):
            raise _unusable(
                self.directory, f"{_STATE} is not a complete checkpoint index "
                "(truncated or edited)"
            ) from None  # fmt: skip
        # Before reading anything the index names: an edited index could
        # point at other files or carry other scores.
        if checksum != json_digest(state):
            raise _unusable(
                self.directory, f"{_STATE} was modified after it was written"
            )
        if state.get("format") != FORMAT:
            raise _unusable(
                self.directory,
                f"it has format {state.get('format')!r}; this version of skal "
                f"reads format {FORMAT}",
            )
        if self.code is not None and state["code"] != self.code:
            saved = state["code"]
            changed = sorted(
                k
                for k in set(saved) | set(self.code)
                if saved.get(k) != self.code.get(k)
            )
            raise _unusable(
                self.directory,
                f"the code of {changed} differs from the code that wrote it (the "
                "run key names classes and functions, the checkpoint also "
                "records their source); resuming would mix two models in one curve",
            )
        files = state["files"]
        for name in (state["arrays"], state["weights"]):
            if name is not None and name not in files:
                raise _unusable(
                    self.directory, f"{_STATE} records no checksum for {name!r}"
                )
        # Every file, also the earlier rounds' weights that snapshots load
        # later: a damaged run fails here, before any training or scoring.
        for name, digest in files.items():
            self._verify(name, digest)
        self._files = dict(state["files"])
        try:
            with np.load(self.directory / state["arrays"], allow_pickle=False) as npz:
                state["_arrays"] = {k: npz[k] for k in npz.files}
        except (OSError, ValueError) as exc:  # pragma: no cover - checksummed
            raise _unusable(self.directory, f"{state['arrays']}: {exc}") from None
        return state

    def _verify(self, name, digest) -> None:
        if not isinstance(name, str) or not _FILE_NAME.fullmatch(name):
            raise _unusable(
                self.directory,
                f"{_STATE} names the file {name!r}, which is not a file of the run "
                "directory (only state-r<round>.npz and weights-r<round>.pt are)",
            )
        path = self.directory / name
        if not path.is_file():
            raise _unusable(self.directory, f"its file {name} is missing")
        if file_digest(path) != digest:
            raise _unusable(
                self.directory,
                f"its file {name} does not match the checksum recorded when it "
                "was written (corrupted or truncated)",
            )

    def weights(self, filename: str) -> dict:
        """Load one round's weights safely (``weights_only=True``), verified
        against the checksum recorded for them."""
        if filename not in self._files:
            raise _unusable(
                self.directory, f"{_STATE} records no checksum for {filename}"
            )
        self._verify(filename, self._files[filename])
        try:
            return load_weights(
                self.directory / filename, self._files[filename], "weights"
            )
        except CheckpointError as exc:
            raise _unusable(self.directory, str(exc)) from None

    def save(self, round_, order, scores, learner, net=None) -> None:
        """Commit the state after ``round_`` (0 is the initial fit)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        # First, so that state that cannot be stored fails before any file
        # of this round is written.
        saved, arrays = learner_state(learner)
        arrays["order"] = np.asarray(order, dtype=np.int64)
        files = {
            name: digest
            for name, digest in self._files.items()
            if self.keep_weights and name.startswith("weights-")
        }
        arrays_name = f"state-r{round_}.npz"
        files[arrays_name] = write_file(
            self.directory / arrays_name, lambda fh: np.savez(fh, **arrays)
        )
        weights_name = None
        if net is not None:
            weights_name = f"weights-r{round_}.pt"
            states = state_dicts(net)
            files[weights_name] = write_file(
                self.directory / weights_name, lambda fh: torch.save(states, fh)
            )
        state = {
            "format": FORMAT,
            "round": int(round_),
            "n_labeled": len(order),
            "scores": [float(s) for s in scores],
            "arrays": arrays_name,
            "weights": weights_name,
            "files": files,
            "code": self.code,
            **saved,
        }
        # The checksum is over the canonical JSON (sorted keys), so it does
        # not depend on the indentation of the file.
        state["checksum"] = json_digest(state)
        payload = json.dumps(state, indent=1).encode()
        write_file(self.directory / _STATE, lambda fh: fh.write(payload))
        self._files = files
        self._prune()

    def _prune(self) -> None:
        """Delete the run's files that the committed state no longer names.

        Only after the commit: until ``state.json`` is replaced, the previous
        round's files are the checkpoint. Temporary files are never touched,
        since another writer may be about to rename one.
        """
        for path in self.directory.iterdir():
            if _FILE_NAME.fullmatch(path.name) and path.name not in self._files:
                path.unlink(missing_ok=True)
