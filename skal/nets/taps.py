"""Read intermediate features of a torch module through forward hooks.

Hooks let skal read the penultimate embedding and named intermediate layers
of an unmodified module (a torchvision ResNet, say) without changing its
``forward``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from .._utils import logits_of


def find_module(module: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (dotted path, as in ``named_modules``).

    Parameters
    ----------
    module : torch.nn.Module
    name : str

    Returns
    -------
    submodule : torch.nn.Module

    Raises
    ------
    ValueError
        If there is no such submodule; the message lists the valid names.
    """
    modules = dict(module.named_modules())
    if name not in modules:
        valid = [n for n in modules if n]
        shown = ", ".join(valid[:30]) + (", ..." if len(valid) > 30 else "")
        raise ValueError(
            f"{type(module).__name__} has no submodule named {name!r}; "
            f"valid names are: {shown}"
        )
    return modules[name]


def last_linear_name(module: nn.Module) -> str:
    """Name of the last ``nn.Linear`` in registration order.

    Its input is what skal calls the penultimate embedding.

    Parameters
    ----------
    module : torch.nn.Module

    Returns
    -------
    name : str

    Raises
    ------
    ValueError
        If the module has no ``nn.Linear``.
    """
    names = [
        n for n, m in module.named_modules() if isinstance(m, nn.Linear | nn.LazyLinear)
    ]
    if not names:
        raise ValueError(
            f"{type(module).__name__} has no nn.Linear layer, so the penultimate "
            "embedding cannot be found; name the classification layer with "
            "embedding_layer=..."
        )
    return names[-1]


class LayerTap:
    """Context manager that records named layers' outputs (or inputs).

    Parameters
    ----------
    module : torch.nn.Module
        The module to observe.
    layers : iterable of str
        Dotted names of the submodules, as in ``module.named_modules()``.
    record : {"output", "input"}, default="output"
        Record each layer's output, or its first positional input.
    detach : bool, default=True
        Detach the recorded tensors. Training-time heads (TiDAL, learning
        loss) use ``detach=False`` so that their loss reaches the backbone.
    transform : callable or None, default=None
        Applied to each recorded tensor inside the hook (after detaching), so
        that only its result is kept: the auxiliary heads pool a feature map
        as soon as the layer has produced it, and the map itself is freed as
        early as in an untapped forward pass.

    Attributes
    ----------
    features : dict of str to torch.Tensor
        The tensors recorded during the most recent forward pass; a layer
        called several times gives its last call.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from skal.nets.taps import LayerTap
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> with LayerTap(net, ["0", "2"], record="input") as tap:
    ...     _ = net(torch.zeros(5, 4))
    >>> tuple(tap.features["2"].shape)
    (5, 3)
    """

    def __init__(
        self,
        module: nn.Module,
        layers: Iterable[str],
        *,
        record: str = "output",
        detach: bool = True,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        if record not in ("output", "input"):
            raise ValueError(f"record must be 'output' or 'input', got {record!r}")
        if transform is not None and not callable(transform):
            raise TypeError(
                f"transform must be a callable or None, got {type(transform).__name__}"
            )
        self.module = module
        self.layers = list(layers)
        self.record = record
        self.detach = detach
        self.transform = transform
        self.features: dict[str, torch.Tensor] = {}
        self._handles = []

    def _hook(self, name):
        def hook(mod, inputs, output):
            value = output if self.record == "output" else inputs[0]
            value = logits_of(value)
            if self.detach:
                value = value.detach()
            if self.transform is not None:
                value = self.transform(value)
            self.features[name] = value

        return hook

    def __enter__(self):
        for name in self.layers:
            sub = find_module(self.module, name)
            self._handles.append(sub.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return False
