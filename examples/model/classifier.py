"""The architecture of examples/model/classifier.pt: a small MLP for 16 features and 5 classes."""

from torch import nn


class Classifier(nn.Module):
    def __init__(self, features: int = 16, hidden: int = 32, classes: int = 5):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, classes))

    def forward(self, x):
        return self.net(x)
