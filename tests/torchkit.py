"""Small torch teachers shared by the teacher-import and certifier tests."""

from __future__ import annotations

import torch
from torch import nn


class ResTanhCNN(nn.Module):
    """Conv, BatchNorm, a residual Add, MaxPool and a Tanh head (the issue's example teacher), on 1×8×8
    inputs; the head is ``scale · tanh(·)``, optionally followed by Softmax."""

    def __init__(self, softmax: bool = False, scale: float = 4.0):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 4 * 4, 10)
        self.softmax = softmax
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.c1(x)))
        h = h + torch.relu(self.c2(h))
        z = self.scale * torch.tanh(self.fc(self.pool(h).flatten(1)))
        return torch.softmax(z, dim=1) if self.softmax else z
