"""Train the example classifier and write its checkpoint and validation inputs (deterministic).

    python examples/model/make_model.py

- ``classifier.pt``: the state dict of :class:`classifier.Classifier`, trained for 400 steps on a
  long-tailed 5-class problem (class frequencies 60/25/10/4/1 %);
- ``val.npz``: 2,000 validation inputs (``inputs``), their labels (``targets``) and ``class_names``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from classifier import Classifier  # noqa: E402

NAMES = ["road", "car", "pedestrian", "cyclist", "animal"]
FREQUENCIES = torch.tensor([0.60, 0.25, 0.10, 0.04, 0.01])


def sample(count: int, generator: torch.Generator, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.multinomial(FREQUENCIES, count, replacement=True, generator=generator)
    return centres[labels] + 1.6 * torch.randn(count, centres.shape[1], generator=generator), labels


def main() -> None:
    generator = torch.Generator().manual_seed(7)
    centres = torch.randn(5, 16, generator=generator)
    train_x, train_y = sample(4000, generator, centres)
    val_x, val_y = sample(2000, generator, centres)
    torch.manual_seed(7)
    model = Classifier()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(400):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(train_x), train_y).backward()
        optimiser.step()
    torch.save(model.state_dict(), HERE / "classifier.pt")
    np.savez(HERE / "val.npz", inputs=val_x.numpy(), targets=val_y.numpy(), class_names=np.asarray(NAMES))
    print(f"wrote {HERE / 'classifier.pt'} and {HERE / 'val.npz'}")


if __name__ == "__main__":
    main()
