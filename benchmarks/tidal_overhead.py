"""Training overhead of the auxiliary heads: epoch time with head / without.

The same backbone weights, data, batch size and seed train one epoch as a
plain ``skal.NeuralNetClassifier``, as a ``skal.TiDALClassifier`` and as a
``skal.LLossClassifier``; the three are timed in turns (best of
``--repeats``) in one run, and the ratio to the plain net is reported.
Two more rows time a hand-written PyTorch loop over the same data (no
skorch, no skal): the backbone alone (``torch``) and the backbone with the
same head, loss and training-dynamics buffer as TiDAL (``torch+tidal``);
their ratio is what the head costs in eager PyTorch, without skal's
machinery.

``--phases N`` times N training steps of the tutorial CNN on one fixed batch
instead, phase by phase (forward, loss, backward, optimizer step; the 20th
percentile of each, in microseconds), for the three skal nets and the two
hand-written ones: where the head's extra time goes, in skal and in eager
PyTorch.

Usage::

    python benchmarks/tidal_overhead.py                 # CPU, small sizes
    python benchmarks/tidal_overhead.py --device cuda --n-resnet 10000
    python benchmarks/tidal_overhead.py --phases 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import check_device, measure, print_table  # noqa: E402
from skorch.dataset import unpack_data  # noqa: E402

import skal  # noqa: E402
from skal.nets import AuxiliaryHead, ResNet18, TutorialCNN  # noqa: E402
from skal.nets.heads import global_average_pool  # noqa: E402

TAPS = {
    "TutorialCNN": (TutorialCNN, ["conv1", "conv2", "fc1", "fc2"]),
    "ResNet18": (ResNet18, ["layer1", "layer2", "layer3", "layer4"]),
}


def make_nets(module, taps, device, batch_size):
    common = dict(
        classes=list(range(10)),
        device=device,
        batch_size=batch_size,
        max_epochs=1,
        iterator_train__shuffle=True,
    )
    nets = {
        "plain": skal.NeuralNetClassifier(module, **common),
        "tidal": skal.TiDALClassifier(module, tidal_layers=taps, **common),
        "lloss": skal.LLossClassifier(module, lloss_layers=taps, **common),
    }
    torch.manual_seed(0)
    state = None
    for net in nets.values():
        net.initialize()
        if state is None:
            state = net.module_.state_dict()
        net.module_.load_state_dict(state)
    return nets


def one_epoch(net, X, y):
    """A function that trains one epoch and returns the process CPU time it took."""

    def fn():
        torch.manual_seed(0)  # same shuffling for every net
        start = time.process_time()
        net.partial_fit(X, y)
        return time.process_time() - start

    return fn


def torch_steps(module, taps, state, X, y, device):
    """Hand-written PyTorch training steps: the backbone alone and with
    TiDAL's head.

    Same initial backbone weights and Adam(lr=1e-3) for both; the head net
    also keeps TiDAL's running mean of each sample's softmax and adds
    KL(mean || softmax(head)) to the loss. Returns a dict of functions that
    train one step on the rows ``index`` of ``X`` and return the seconds of
    its phases (forward, loss, backward, optimizer, all four); the buffer is
    written after the optimizer phase, untimed (skal writes it in
    ``on_batch_end``, which ``step_phases`` does not time either).
    """
    X = torch.as_tensor(X, device=device)
    y = torch.as_tensor(y, device=device)

    def make(with_head):
        torch.manual_seed(0)
        net = module().to(device)
        net.load_state_dict(state)
        params = list(net.parameters())
        head, features = None, {}
        if with_head:
            head = AuxiliaryHead(len(taps), 10).to(device)
            for name in taps:

                def hook(mod, inputs, output, name=name):
                    features[name] = global_average_pool(output)

                net.get_submodule(name).register_forward_hook(hook)
            with torch.no_grad():  # materializes the lazy layers
                net(X[:2])
                head([features[name] for name in taps])
            params += list(head.parameters())
        optimizer = torch.optim.Adam(params, lr=1e-3)
        mean = torch.zeros(len(X), 10, device=device)
        count = torch.zeros(len(X), device=device)

        def step(index):
            t0 = time.perf_counter()
            net.train()
            optimizer.zero_grad()
            logits = net(X[index])
            out = head([features[name] for name in taps]) if with_head else None
            t1 = time.perf_counter()
            loss = F.cross_entropy(logits, y[index])
            if with_head:
                proba = torch.softmax(logits.detach(), dim=1)
                n = count[index]
                target = (mean[index] * n[:, None] + proba) / (n + 1)[:, None]
                kl = F.kl_div(F.log_softmax(out, dim=1), target, reduction="batchmean")
                loss = loss + kl
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            optimizer.step()
            t4 = time.perf_counter()
            if with_head:
                mean[index] = target
                count[index] = n + 1
            return t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0

        return step

    return {"torch": make(False), "torch+tidal": make(True)}


def torch_epochs(module, taps, state, X, y, device, batch_size):
    """Hand-written PyTorch epochs (``torch_steps``) over batches of
    ``batch_size`` in a random order. Returns a dict of functions that
    train one epoch each and return the process CPU time."""
    steps = torch_steps(module, taps, state, X, y, device)

    def make(step):
        def epoch():
            torch.manual_seed(0)
            start = time.process_time()
            order = torch.randperm(len(X), device=device)
            for index in order.split(batch_size):
                step(index)
            return time.process_time() - start

        return epoch

    return {key: make(step) for key, step in steps.items()}


PHASES = ("forward", "loss", "backward", "optimizer", "step")


def step_phases(net, batch, steps):
    """Seconds per phase of ``steps`` training steps on one batch."""
    times = {phase: [] for phase in PHASES}
    for _ in range(steps):
        t0 = time.perf_counter()
        net.optimizer_.zero_grad()
        net._set_training(True)
        Xi, yi = unpack_data(batch)
        y_pred = net.infer(Xi)
        t1 = time.perf_counter()
        loss = net.get_loss(y_pred, yi, X=Xi, training=True)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        net.optimizer_.step()
        t4 = time.perf_counter()
        for phase, seconds in zip(
            PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0)
        ):
            times[phase].append(seconds)
    return times


def phases_table(args):
    """Per-phase step times of the tutorial CNN: plain, TiDAL, learning loss."""
    rng = np.random.RandomState(0)
    X = rng.randn(4 * args.batch_size, 3, 32, 32).astype(np.float32)
    y = rng.randint(10, size=len(X))
    module, taps = TAPS["TutorialCNN"]
    nets = make_nets(module, taps, args.device, args.batch_size)
    batches = {}
    for key, net in nets.items():
        one_epoch(net, X, y)()  # warm-up; materializes lazy head layers
        net.notify("on_train_begin", X=X, y=y)
        torch.manual_seed(0)
        batches[key] = next(iter(net.get_iterator(net.get_dataset(X, y), True)))
    state = nets["plain"].module_.state_dict()
    by_hand = torch_steps(module, taps, state, X, y, args.device)
    torch.manual_seed(0)
    index = torch.randperm(len(X))[: args.batch_size]
    for step in by_hand.values():  # warm-up
        step(index)
    keys = [*nets, *by_hand]
    times = {key: {phase: [] for phase in PHASES} for key in keys}
    for _ in range(10):  # in turns, so that other jobs slow all five alike
        for key, net in nets.items():
            for phase, seconds in step_phases(
                net, batches[key], args.phases // 10
            ).items():
                times[key][phase] += seconds
        for key, step in by_hand.items():
            for _ in range(args.phases // 10):
                for phase, seconds in zip(PHASES, step(index)):
                    times[key][phase].append(seconds)
    rows = []
    for phase in PHASES:
        row = dict(phase=phase)
        for key in keys:
            row[key] = f"{np.percentile(times[key][phase], 20) * 1e6:.0f}"
        for key in ("tidal", "lloss"):
            row[f"{key}-plain"] = f"{float(row[key]) - float(row['plain']):+.0f}"
        row["by hand"] = f"{float(row['torch+tidal']) - float(row['torch']):+.0f}"
        rows.append(row)
    print(
        f"device={args.device} threads={torch.get_num_threads()} "
        f"TutorialCNN batch={args.batch_size}: microseconds per training step "
        f"on one batch, 20th percentile of {args.phases // 10 * 10} steps each; "
        "torch, torch+tidal: the hand-written loop's step (by hand = "
        "torch+tidal - torch)"
    )
    columns = [
        "phase",
        "plain",
        "tidal",
        "lloss",
        "torch",
        "torch+tidal",
        "tidal-plain",
        "lloss-plain",
        "by hand",
    ]
    print_table(rows, columns)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--n-cnn", type=int, default=2048)
    parser.add_argument("--n-resnet", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument(
        "--phases", type=int, default=0, help="time this many steps by phase"
    )
    args = parser.parse_args(argv)
    check_device(parser, args.device)
    torch.set_num_threads(args.threads)
    if args.phases:
        if args.device != "cpu":
            parser.error("--phases times CPU steps (no CUDA synchronization)")
        phases_table(args)
        return
    rng = np.random.RandomState(0)
    rows = []
    for name, n in (("TutorialCNN", args.n_cnn), ("ResNet18", args.n_resnet)):
        module, taps = TAPS[name]
        X = rng.randn(n, 3, 32, 32).astype(np.float32)
        y = rng.randint(10, size=n)
        nets = make_nets(module, taps, args.device, args.batch_size)
        epochs = {key: one_epoch(net, X, y) for key, net in nets.items()}
        for net in nets.values():  # warm-up; materializes lazy head layers
            one_epoch(net, X[: args.batch_size], y[: args.batch_size])()
        state = nets["plain"].module_.state_dict()
        by_hand = torch_epochs(module, taps, state, X, y, args.device, args.batch_size)
        for epoch in by_hand.values():  # warm-up
            epoch()
        epochs.update(by_hand)
        best = dict.fromkeys(epochs, float("inf"))
        best_cpu = dict.fromkeys(epochs, float("inf"))
        for _ in range(args.repeats):
            for key, epoch in epochs.items():
                seconds, _, cpu_seconds = measure(epoch, device=args.device, repeats=1)
                best_cpu[key] = min(best_cpu[key], cpu_seconds)
                best[key] = min(best[key], seconds)
        for key in epochs:
            base = "torch" if key.startswith("torch") else "plain"
            rows.append(
                dict(
                    model=name,
                    net=key,
                    N=n,
                    batch=args.batch_size,
                    epoch_seconds=f"{best[key]:.3f}",
                    ratio=f"{best[key] / best[base]:.3f}",
                    over=base,
                    cpu_seconds=f"{best_cpu[key]:.3f}",
                    cpu_ratio=f"{best_cpu[key] / best_cpu[base]:.3f}",
                )
            )
    print(
        f"device={args.device} threads={torch.get_num_threads()} "
        f"repeats={args.repeats} (best of, interleaved); ratio = epoch time over "
        "the net named in 'over' (torch rows: a hand-written PyTorch loop, the "
        "same head, loss and buffer); cpu_* = process CPU "
        "time, less sensitive to other jobs on a shared CPU (not meaningful "
        "on CUDA)"
    )
    columns = ["model", "net", "N", "batch", "epoch_seconds", "ratio", "over"]
    print_table(rows, columns + ["cpu_seconds", "cpu_ratio"])


if __name__ == "__main__":
    main()
