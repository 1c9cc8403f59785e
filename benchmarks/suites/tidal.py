"""Query cost of the auxiliary-head strategies ("tidal", "lloss").

Each strategy's utility over N candidates (one eval forward pass through the
backbone with its layers tapped, plus the head) is compared with a plain
forward pass (``predict_proba`` of a ``skal.NeuralNetClassifier`` on the same
backbone weights) over the same samples, side by side in one run.
"""

from __future__ import annotations

import numpy as np
import torch
from _harness import fmt_bytes, measure

import skal
from skal.nets import ResNet18, TutorialCNN
from skal.strategies import LLoss, QueryContext, TiDAL

RESNET_TAPS = ["layer1", "layer2", "layer3", "layer4"]
CNN_TAPS = ["conv1", "conv2", "fc1", "fc2"]


def configs(args):
    """(model name, module, taps, N, C) to measure."""
    cuda = str(args.device).startswith("cuda")
    cnn_n = 10_000
    resnet_n = 10_000 if cuda else 256
    out = [("TutorialCNN", TutorialCNN, CNN_TAPS, cnn_n, 10)]
    if not args.quick:
        out.append(("TutorialCNN", TutorialCNN, CNN_TAPS, cnn_n, 100))
        out.append(("ResNet18", ResNet18, RESNET_TAPS, resnet_n, 10))
    return out


def _nets(module, taps, n_classes, device):
    common = dict(
        classes=list(range(n_classes)),
        device=device,
        batch_size=128,
        iterator_valid__batch_size=256,
    )
    torch.manual_seed(0)
    tidal = skal.TiDALClassifier(module, tidal_layers=taps, **common).initialize()
    lloss = skal.LLossClassifier(module, lloss_layers=taps, **common).initialize()
    plain = skal.NeuralNetClassifier(module, **common).initialize()
    lloss.module_.load_state_dict(tidal.module_.state_dict())
    plain.module_.load_state_dict(tidal.module_.state_dict())
    # materialize the heads' lazy layers with a first batch
    tidal.predict_dynamics(np.zeros((2, 3, 32, 32), np.float32))
    lloss.predict_loss(np.zeros((2, 3, 32, 32), np.float32))
    return tidal, lloss, plain


def interleaved(fns, device, repeats):
    """Best time and peak memory of each function, measured in turns.

    Alternating the functions spreads the load of a shared machine evenly
    over them, so their ratios are fairer than back-to-back measurements.
    """
    best = {name: (float("inf"), None) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            seconds, mem, _ = measure(fn, device=device, repeats=1)
            old_s, old_m = best[name]
            peak = old_m if mem is None else max(mem, old_m or 0)
            best[name] = (min(seconds, old_s), peak)
    return best


def _measure_config(name, module, taps, n, n_classes, X, args):
    tidal, lloss, plain = _nets(module, taps, n_classes, args.device)
    y = np.zeros(1, dtype=np.int64)

    def context(net):
        return QueryContext(
            net, np.arange(n_classes), X[:1], y, np.random.RandomState(0)
        )

    fns = {
        "plain forward": lambda: plain.predict_proba(X),
        "tidal entropy": lambda: TiDAL("entropy").utility(context(tidal), X),
        "tidal margin": lambda: TiDAL("margin").utility(context(tidal), X),
        "lloss": lambda: LLoss().utility(context(lloss), X),
    }
    with torch.no_grad():
        timings = interleaved(fns, args.device, args.repeats)
    base = timings["plain forward"][0]
    return [
        dict(
            model=name,
            method=method,
            N=n,
            C=n_classes,
            seconds=f"{seconds:.3f}",
            ratio=f"{seconds / base:.2f}",
            baseline="forward",
            peak_mem=fmt_bytes(mem),
        )
        for method, (seconds, mem) in timings.items()
    ]


def rows(args):
    out = []
    rng = np.random.RandomState(0)
    threads = torch.get_num_threads()
    if not str(args.device).startswith("cuda"):
        torch.set_num_threads(1)  # steadier ratios on a shared CPU
    try:
        for name, module, taps, n, n_classes in configs(args):
            X = rng.randn(n, 3, 32, 32).astype(np.float32)
            out += _measure_config(name, module, taps, n, n_classes, X, args)
    finally:
        torch.set_num_threads(threads)
    return out
