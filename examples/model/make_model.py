"""Train the example classifier and write its checkpoint and validation inputs (deterministic).

    python examples/model/make_model.py

- ``classifier.pt``: the state dict of :class:`classifier.Classifier`, trained for 400 steps on a
  long-tailed 5-class problem (class frequencies 60/25/10/4/1 %);
- ``val.npz``: 2,000 validation inputs (``inputs``), their labels (``targets``) and ``class_names``;
- ``runs/early.npz`` and ``runs/late.npz``: the validation logits in lossaudit's dump format after
  40 and after all 400 steps, for ``lossaudit compare runs/late.npz --baseline early.json``
  (README "Tracking runs").
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


def dump_logits(model: Classifier, inputs: torch.Tensor, labels: torch.Tensor, path: Path) -> None:
    model.eval()
    with torch.no_grad():
        logits = model(inputs)
    model.train()
    np.savez(path, logits=logits.numpy(), targets=labels.numpy(), class_names=np.asarray(NAMES))


def main() -> None:
    generator = torch.Generator().manual_seed(7)
    centres = torch.randn(5, 16, generator=generator)
    train_x, train_y = sample(4000, generator, centres)
    val_x, val_y = sample(2000, generator, centres)
    torch.manual_seed(7)
    model = Classifier()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    (HERE / "runs").mkdir(exist_ok=True)
    for step in range(1, 401):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(train_x), train_y).backward()
        optimiser.step()
        if step in (40, 400):  # eval mode draws no random numbers: training is unchanged
            dump_logits(model, val_x, val_y, HERE / "runs" / f"{'early' if step == 40 else 'late'}.npz")
    torch.save(model.state_dict(), HERE / "classifier.pt")
    np.savez(HERE / "val.npz", inputs=val_x.numpy(), targets=val_y.numpy(), class_names=np.asarray(NAMES))
    print(f"wrote {HERE / 'classifier.pt'}, {HERE / 'val.npz'} and {HERE / 'runs'}")


if __name__ == "__main__":
    main()
