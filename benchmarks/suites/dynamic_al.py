"""dynamicAL query cost: skal's exact per-layer method vs BackPACK BatchGrad.

For each model and pool size N, three timings in the same run:

- baseline: one forward+backward pass over the N pool samples (eval mode,
  batches of ``--dal-batch-size``, gradients accumulated);
- ``dynamic_al``: ``DynamicAL(gamma=2, batch_size=--dal-batch-size)
  .utility`` through a QueryContext, including G_S over a labelled set S of
  ``--dal-labeled`` samples (default N // 8, at least 16);

``--dal-batch-size`` defaults to the strategy's own default, the net's
inference batch size (``skal.NeuralNetClassifier``'s default, 512), used by
all three rows, so that the ratios are those of the defaults; the
``batch`` column shows it.
- ``backpack BatchGrad``: what the official code does, made exact in eval
  mode: per batch, BackPACK's per-sample gradients of every parameter
  (materialized), then their squared norms and inner products with the same
  G_S (computed the same batched way).

Models: the PyTorch tutorial CNN, skal's CIFAR ResNet-18 and torchvision's
``resnet18(num_classes=10)``, all on random 3x32x32 inputs with random
weights and BatchNorm statistics moved by a few train-mode passes. Each
method runs once on one batch (warm-up) before it is timed.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from _harness import fmt_bytes, measure
from torch import nn

import skal
from skal.strategies import DynamicAL, QueryContext

N_CLASSES = 10

# (model, pool size N, also time BackPACK?). The ResNets are cut to sizes
# whose runs (BackPACK's above all) finish in minutes on 2 shared CPU cores.
FULL = [
    ("tutorial_cnn", 1024, True),
    ("tutorial_cnn", 4096, True),
    ("skal_resnet18", 128, True),
    ("skal_resnet18", 256, False),
    ("tv_resnet18", 128, True),
    ("tv_resnet18", 1024, False),
]
QUICK = [
    ("tutorial_cnn", 256, True),
    ("skal_resnet18", 32, True),
    ("tv_resnet18", 64, True),
]

FACTORIES = {
    "tutorial_cnn": skal.nets.TutorialCNN,
    "skal_resnet18": skal.nets.ResNet18,
    "tv_resnet18": lambda: torchvision.models.resnet18(num_classes=N_CLASSES),
}


def add_arguments(parser):
    group = parser.add_argument_group("dynamic_al suite")
    group.add_argument(
        "--dal-batch-size",
        type=int,
        default=None,
        help="DynamicAL's batch_size, and the other rows' (default: the "
        "strategy's default, the net's inference batch size)",
    )
    group.add_argument(
        "--dal-labeled",
        type=int,
        default=None,
        help="labelled samples for G_S (default: N // 8, at least 16)",
    )
    group.add_argument(
        "--dal-models", nargs="*", default=None, help="subset of " + str(FACTORIES)
    )


def rows(args):
    device = torch.device(args.device)
    config = QUICK if args.quick else FULL
    if args.dal_models:
        config = [c for c in config if c[0] in args.dal_models]
    out = []
    for name, n, with_backpack in config:
        out += _measure_model(name, n, with_backpack, args, device)
    return out


def _measure_model(name, n, with_backpack, args, device):
    module = _module(name, device)
    rng = np.random.RandomState(0)
    X = rng.randn(n, 3, 32, 32).astype(np.float32)
    n_lab = args.dal_labeled or max(16, n // 8)
    X_lab = rng.randn(n_lab, 3, 32, 32).astype(np.float32)
    y_lab = rng.randint(0, N_CLASSES, n_lab)
    net = skal.NeuralNetClassifier(
        module, classes=list(range(N_CLASSES)), device=str(device)
    ).initialize()
    context = QueryContext(
        net, np.arange(N_CLASSES), X_lab, y_lab, np.random.RandomState(0)
    )
    strategy = DynamicAL(gamma=2.0, batch_size=args.dal_batch_size)
    # what the strategy's default batch_size (None) resolves to
    bs = args.dal_batch_size or net.inference_batch_size or net.batch_size
    methods = [
        ("forward+backward", lambda X: _forward_backward(module, X, bs, device)),
        (
            f"dynamic_al (skal, exact; |S|={n_lab})",
            lambda X: strategy.utility(context, X),
        ),
    ]
    if with_backpack:
        methods.append(
            (
                f"backpack BatchGrad (|S|={n_lab})",
                lambda X: _backpack_utility(module, X, X_lab, y_lab, bs, device, name),
            )
        )
    common = {
        "model": name,
        "N": n,
        "C": N_CLASSES,
        "batch": bs,
        "baseline": "fwd+bwd",
    }
    out, results, base = [], [], None
    for method, fn in methods:
        fn(X[: min(bs, n)])  # warm-up: library initialization, first shapes
        sec, mem, result = measure(
            lambda fn=fn: fn(X), device=device, repeats=args.repeats
        )
        base = sec if base is None else base
        results.append(result)
        out.append(
            {
                **common,
                "method": method,
                "seconds": f"{sec:.3f}",
                "ratio": f"{sec / base:.2f}",
                "peak_mem": fmt_bytes(mem),
            }
        )
    if with_backpack:
        ours, theirs = results[1], results[2]
        diff = np.max(np.abs(theirs - ours)) / np.max(np.abs(ours))
        out[2]["method"] += f", max rel diff to skal {diff:.1e}"
    return out


def _module(name, device):
    with skal._utils.torch_seed(0):
        module = FACTORIES[name]()
        module.train()
        with torch.no_grad():
            for _ in range(3):
                module(torch.randn(32, 3, 32, 32))
    return module.to(device).eval()


def _batches(X, bs, device):
    for start in range(0, len(X), bs):
        yield torch.as_tensor(X[start : start + bs], device=device)


def _forward_backward(module, X, bs, device):
    module.zero_grad(set_to_none=True)
    for x in _batches(X, bs, device):
        logits = module(x)
        F.cross_entropy(logits, logits.argmax(1).detach(), reduction="sum").backward()
    module.zero_grad(set_to_none=True)


def _backpack_utility(module, X, X_lab, y_lab, bs, device, name):
    """The official code's approach with BackPACK BatchGrad, exact in eval mode."""
    try:
        from backpack import backpack, extend
        from backpack.extensions import BatchGrad
    except ImportError as exc:
        raise ImportError(
            "the BackPACK rows need the benchmarks extra: "
            'pip install -e ".[benchmarks]"'
        ) from exc

    model = extend(copy.deepcopy(module), use_converter=name == "tv_resnet18")
    model.eval()
    loss_fn = extend(nn.CrossEntropyLoss(reduction="sum"))
    params = [p for p in model.parameters() if p.requires_grad]
    g_s = [torch.zeros_like(p) for p in params]
    y_lab = torch.as_tensor(y_lab, device=device)
    for i, x in enumerate(_batches(X_lab, bs, device)):
        loss = loss_fn(model(x), y_lab[i * bs : (i + 1) * bs])
        for acc, g in zip(g_s, torch.autograd.grad(loss, params)):
            acc += g
    flat_s = [g.flatten() for g in g_s]
    scores = []
    for x in _batches(X, bs, device):
        model.zero_grad(set_to_none=True)
        logits = model(x)
        loss = loss_fn(logits, logits.argmax(1).detach())
        with backpack(BatchGrad()):
            loss.backward()
        sq = torch.zeros(len(x), device=device)
        dot = torch.zeros(len(x), device=device)
        for p, v in zip(params, flat_s):
            g = p.grad_batch.flatten(1)
            sq += g.pow(2).sum(1)
            dot += g @ v
        scores.append((sq + 2.0 * dot).detach().cpu().numpy())
    model.zero_grad(set_to_none=True)
    return np.concatenate(scores)
