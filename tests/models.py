"""Model classes used to make test checkpoints. The reader never imports this module: a pickled
model names these classes, and ckptviewer must show the file without them."""
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    """The small convolutional network of the PyTorch save/load tutorial (62,006 parameters)."""

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
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class BNNet(nn.Module):
    """Convolution + BatchNorm: buffers (running_mean, running_var, num_batches_tracked) beside parameters."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8, 4)
        self.register_buffer("scratch", nn.Parameter(nn.init.zeros_(nn.Linear(1, 2).weight)).data,
                             persistent=False)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 8))


class Discriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))


class TiedLM(nn.Module):
    """Embedding and output projection share one weight."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 12)
        self.norm = nn.LayerNorm(12)
        self.head = nn.Linear(12, 50, bias=False)
        self.head.weight = self.embed.weight
