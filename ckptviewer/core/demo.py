"""The demo checkpoint: what PyTorch's "Saving and loading models" tutorial writes, made on the fly.

It holds the tutorial's small convolutional network (``Net``: conv1, pool, conv2, fc1..fc3; 62,006
parameters), trained for a few steps on random data with ``SGD(lr=0.001, momentum=0.9)`` so the
optimizer has momentum buffers, wrapped in the training checkpoint the tutorial saves::

    {"epoch": ..., "model_state_dict": ..., "optimizer_state_dict": ..., "loss": ...}

This module imports torch, so it must only run inside a worker thread, never on the path to the
first window.
"""
from __future__ import annotations

import os
from pathlib import Path

DEMO_NAME = "ckptviewer_demo_checkpoint.tar"


def write_demo(folder: str | os.PathLike, *, steps: int = 3, seed: int = 0) -> Path:
    """Write the demo checkpoint into ``folder`` and return its path."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = torch.flatten(x, 1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            return self.fc3(x)

    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        inputs = torch.randn(8, 3, 32, 32, generator=gen)
        labels = torch.randint(0, 10, (8,), generator=gen)
        optimizer.zero_grad()
        loss = criterion(net(inputs), labels)
        loss.backward()
        optimizer.step()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DEMO_NAME
    tmp = folder / (DEMO_NAME + ".part")
    torch.save({"epoch": steps, "model_state_dict": net.state_dict(),
                "optimizer_state_dict": optimizer.state_dict(), "loss": loss.detach()}, tmp)
    os.replace(tmp, path)
    return path
