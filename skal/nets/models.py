"""Small reference modules for skal's examples and tests.

Each module returns logits and takes ``num_classes``, so that
:class:`skal.NeuralNetClassifier` can size its output from ``classes``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class MLP(nn.Module):
    """Multi-layer perceptron on flattened input.

    Parameters
    ----------
    num_classes : int, default=2
        Number of outputs (logits).
    hidden_units : sequence of int, default=(100,)
        Width of each hidden layer (ReLU activations).
    in_features : int or None, default=None
        Input width; ``None`` infers it from the first batch
        (``torch.nn.LazyLinear``).
    dropout : float, default=0.0
        Dropout probability after each hidden layer.

    Examples
    --------
    >>> import torch
    >>> from skal.nets import MLP
    >>> MLP(num_classes=3, in_features=4)(torch.zeros(2, 4)).shape
    torch.Size([2, 3])
    """

    def __init__(
        self,
        num_classes: int = 2,
        hidden_units: Sequence[int] = (100,),
        in_features: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for units in hidden_units:
            layers.append(
                nn.LazyLinear(units) if width is None else nn.Linear(width, units)
            )
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = units
        layers.append(
            nn.LazyLinear(num_classes)
            if width is None
            else nn.Linear(width, num_classes)
        )
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class SmallCNN(nn.Module):
    """Two-convolution network for small images such as 1x8x8 digits.

    conv(3x3) - ReLU - conv(3x3) - ReLU - max-pool - adaptive average pool to
    4x4 - Linear(hidden) - ReLU - dropout - Linear(num_classes).

    Parameters
    ----------
    in_channels : int, default=1
    num_classes : int, default=10
    channels : int, default=32
        Channels of the first convolution; the second has twice as many.
    hidden : int, default=128
        Width of the penultimate embedding.
    dropout : float, default=0.25

    Examples
    --------
    >>> import torch
    >>> from skal.nets import SmallCNN
    >>> SmallCNN()(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: int = 32,
        hidden: int = 128,
        dropout: float = 0.25,
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * channels * 16, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class TutorialCNN(nn.Module):
    """The CNN of the PyTorch CIFAR-10 tutorial (used by the dynamicAL paper).

    conv(5x5, 6) - ReLU - max-pool - conv(5x5, 16) - ReLU - max-pool -
    Linear(120) - ReLU - Linear(84) - ReLU - Linear(num_classes).

    Parameters
    ----------
    in_channels : int, default=3
    num_classes : int, default=10
    input_size : int, default=32
        Height (= width) of the input images, e.g. 28 for Fashion-MNIST.

    Examples
    --------
    >>> import torch
    >>> from skal.nets import TutorialCNN
    >>> TutorialCNN(in_channels=1, input_size=28)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self, in_channels: int = 3, num_classes: int = 10, input_size: int = 32
    ):
        super().__init__()
        side = ((input_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"input_size must be at least 16, got {input_size}")
        self.conv1 = nn.Conv2d(in_channels, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = x.flatten(1)
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convolutions) with an out-of-place residual add.

    Parameters
    ----------
    in_planes : int
        Input channels.
    planes : int
        Output channels of both convolutions.
    stride : int, default=1
        Stride of the first convolution (and of the 1x1 shortcut, if any).
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(
            in_planes, planes, 3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18, CIFAR variant: 3x3 stride-1 stem and no max-pool.

    The four stages are ``layer1`` .. ``layer4`` (64, 128, 256, 512 channels;
    spatial 32, 16, 8, 4 for 32x32 input); the classifier is ``linear``.

    Parameters
    ----------
    in_channels : int, default=3
    num_classes : int, default=10

    Examples
    --------
    >>> import torch
    >>> from skal.nets import ResNet18
    >>> ResNet18(in_channels=1)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        in_planes = 64
        stages = []
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(
                nn.Sequential(
                    BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)
                )
            )
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.avgpool(out).flatten(1))


_VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512)


class VGG11BN(nn.Module):
    """VGG-11 with BatchNorm, CIFAR variant: five poolings to 1x1x512, one Linear.

    The fifth pooling is an adaptive max-pool to 1x1, which equals the
    original 2x2 max-pool on 32x32 input and also accepts 28x28 input.

    Parameters
    ----------
    in_channels : int, default=3
    num_classes : int, default=10

    Examples
    --------
    >>> import torch
    >>> from skal.nets import VGG11BN
    >>> VGG11BN()(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for v in _VGG11:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [
                    nn.Conv2d(channels, v, 3, padding=1),
                    nn.BatchNorm2d(v),
                    nn.ReLU(),
                ]
                channels = v
        layers.append(nn.AdaptiveMaxPool2d(1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))
