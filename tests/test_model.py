"""``compare --model``: a model trained here on imbalanced data, saved as a raw state dict, a
Lightning-style nested dict with prefixes, safetensors, TorchScript and torch.export, gives the
same comparison as a dump of its logits; unsafe files are refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from mlp import MLP  # noqa: E402

ARCH = str(Path(__file__).parent / "fixtures" / "mlp.py") + ":MLP"
CLASSES = ["common", "frequent", "rare", "very-rare"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """An MLP trained for 300 steps on 600 samples with class frequencies 70/20/8/2 %, its
    checkpoints in five forms, the input data, and a dump of its logits in eval mode."""
    folder = tmp_path_factory.mktemp("model")
    generator = torch.Generator().manual_seed(0)
    labels = torch.multinomial(torch.tensor([0.7, 0.2, 0.08, 0.02]), 600, replacement=True, generator=generator)
    centres = torch.randn(4, 8, generator=generator) * 1.5
    inputs = centres[labels] + torch.randn(600, 8, generator=generator)
    torch.manual_seed(0)
    model = MLP()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(300):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(inputs), labels).backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        logits = model(inputs)
    np.savez(folder / "data.npz", inputs=inputs.numpy(), targets=labels.numpy(), class_names=np.asarray(CLASSES))
    np.savez(folder / "dump.npz", logits=logits.numpy(), targets=labels.numpy(), class_names=np.asarray(CLASSES))
    state = model.state_dict()
    torch.save(state, folder / "raw.pt")
    lightning = {"epoch": 3, "global_step": 300, "state_dict": {f"model.module.{k}": v for k, v in state.items()}, "hyper_parameters": {"lr": 0.01}}
    torch.save(lightning, folder / "lightning.ckpt")
    save_file(state, folder / "weights.safetensors")
    torch.jit.script(model).save(str(folder / "scripted.pt"))
    exported = torch.export.export(model, (inputs[:5],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(exported, folder / "exported.pt2")
    return folder


def _report(run_cli, *args) -> dict:
    result = run_cli("compare", *args, "--format", "json", "--isolated")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


CHECKPOINTS = {
    "raw.pt": (["--arch", ARCH], "state dict", "raw"),
    "lightning.ckpt": (["--arch", ARCH], "state dict", "nested under 'state_dict', prefixes stripped: model., module."),
    "weights.safetensors": (["--arch", ARCH], ".safetensors state dict", "safetensors"),
    "scripted.pt": (["--trust-model"], "TorchScript", "loaded with --trust-model"),
    "exported.pt2": (["--trust-model"], "torch.export program", "loaded with --trust-model; runs in the mode it was exported in"),
}


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_every_checkpoint_kind_matches_the_dump(run_cli, trained, name):
    extra, kind, detail = CHECKPOINTS[name]
    expected = _report(run_cli, trained / "dump.npz")
    report = _report(run_cli, "--model", trained / name, "--data", trained / "data.npz", "--batch-size", "64", *extra)
    model = report["input"]["model"]
    assert (model["kind"], model["detail"], model["device"]) == (kind, detail, "cpu")
    assert report["input"]["rows"] == 600 and report["input"]["classes"] == 4
    for loss, values in expected["losses"].items():
        for key in ("sum", "mean", "per_positive", "positive_share", "easy_negative_share", "very_hard_share"):
            assert report["losses"][loss][key] == pytest.approx(values[key], rel=1e-5), (loss, key)
    for ours, theirs in zip(report["per_class"], expected["per_class"]):
        assert ours["positives"] == theirs["positives"]
        for loss, share in theirs["share"].items():
            assert ours["share"][loss] == pytest.approx(share, rel=1e-5, abs=1e-12), (ours["name"], loss)
    assert report["per_class"][3]["name"] == "very-rare"


def test_a_static_batch_export_runs_at_its_batch_size(run_cli, trained, tmp_path):
    """torch.export's default fixes the batch size (5 here): compare runs at that size, pads the
    last of the 600 rows' batches (600 = 5 · 120: use 598 rows to leave a last batch of 3) and drops
    the padding's outputs; the report says so and equals the dump of the model's own outputs. A
    static axis other than the batch that does not fit the data is one line, exit 2."""
    model = MLP()
    model.load_state_dict(torch.load(trained / "raw.pt", weights_only=True))
    model.eval()
    data = np.load(trained / "data.npz")
    inputs, labels = data["inputs"][:598], data["targets"][:598]
    np.savez(tmp_path / "data.npz", inputs=inputs, targets=labels)
    with torch.no_grad():
        logits = model(torch.from_numpy(inputs)).numpy()
    np.savez(tmp_path / "dump.npz", logits=logits, targets=labels)
    torch.export.save(torch.export.export(model, (torch.from_numpy(inputs[:5]),)), tmp_path / "static.pt2")
    report = _report(run_cli, "--model", tmp_path / "static.pt2", "--trust-model", "--data", tmp_path / "data.npz", "--batch-size", "64")
    assert report["input"]["model"]["batch_size"] == 5 and "static batch of 5" in report["input"]["model"]["detail"]
    expected = _report(run_cli, tmp_path / "dump.npz")
    assert report["input"]["rows"] == 598
    for loss, values in expected["losses"].items():
        assert report["losses"][loss]["sum"] == pytest.approx(values["sum"], rel=1e-5), loss
    np.savez(tmp_path / "wide.npz", inputs=np.concatenate([inputs, inputs[:, :2]], axis=1), targets=labels)
    refused = run_cli("compare", "--model", tmp_path / "static.pt2", "--trust-model", "--data", tmp_path / "wide.npz")
    assert refused.exit_code == 2 and "exported for inputs of shape (5, 8)" in refused.stderr and "(598, 10)" in refused.stderr


def test_save_logits_round_trips_and_never_overwrites(run_cli, trained, tmp_path):
    saved = tmp_path / "logits.npz"
    first = _report(run_cli, "--model", trained / "raw.pt", "--arch", ARCH, "--data", trained / "data.npz", "--save-logits", saved)
    assert first["input"]["model"]["saved_logits"] == str(saved)
    again = _report(run_cli, saved)
    assert again["losses"]["focal"]["sum"] == pytest.approx(first["losses"]["focal"]["sum"], rel=1e-6)
    result = run_cli("compare", "--model", trained / "raw.pt", "--arch", ARCH, "--data", trained / "data.npz", "--save-logits", saved)
    assert result.exit_code == 2 and "never overwrites" in result.stderr


def test_tuple_output_needs_output_key(run_cli, trained):
    arch = ARCH.replace(":MLP", ":TupleMLP")
    result = run_cli("compare", "--model", trained / "raw.pt", "--arch", arch, "--data", trained / "data.npz")
    assert result.exit_code == 2 and "returns a tuple (0: (256, 4), 1: (256, 16)); pick the logits with --output-key INDEX" in result.stderr
    report = _report(run_cli, "--model", trained / "raw.pt", "--arch", arch, "--data", trained / "data.npz", "--output-key", "0")
    expected = _report(run_cli, trained / "dump.npz")
    assert report["losses"]["ce"]["sum"] == pytest.approx(expected["losses"]["ce"]["sum"], rel=1e-5)


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_checkpoint_is_refused_and_runs_nothing(run_cli, trained, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"head.weight": torch.zeros(4, 16)}, "callback": _Exploit(marker)}, tmp_path / "evil.ckpt")
    result = run_cli("compare", "--model", tmp_path / "evil.ckpt", "--arch", ARCH, "--data", trained / "data.npz")
    assert result.exit_code == 2 and "refused to unpickle" in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("name,what", [("scripted.pt", "a TorchScript archive"), ("exported.pt2", "a torch.export program (.pt2)")])
def test_code_bearing_checkpoints_need_trust(run_cli, trained, name, what):
    result = run_cli("compare", "--model", trained / name, "--data", trained / "data.npz")
    assert result.exit_code == 2
    assert f"{what} holds code that runs when it is loaded; lossaudit loads it only with --trust-model" in result.stderr


def test_state_dict_key_mismatch_lists_keys(run_cli, trained, tmp_path):
    state = torch.load(trained / "raw.pt", weights_only=True)
    state["extra.weight"] = torch.zeros(1)
    del state["head.bias"]
    torch.save(state, tmp_path / "broken.pt")
    result = run_cli("compare", "--model", tmp_path / "broken.pt", "--arch", ARCH, "--data", trained / "data.npz")
    assert result.exit_code == 2
    assert "1 missing (head.bias); 1 unexpected (extra.weight)" in result.stderr


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--arch", "tests/fixtures/no_such.py:MLP"], "no such file"),
        (["--arch", "tests.fixtures.no_such_module:MLP"], "--arch 'tests.fixtures.no_such_module:MLP' cannot be imported"),
        ([], "a state dict holds weights only; name the model class with --arch"),
        (["--arch", ARCH, "--inputs-key", "pixels"], "no key 'pixels' (--inputs-key); keys present: inputs, targets, class_names"),
        (
            ["--arch", ARCH, "--init", "hidden=32"],
            "3 tensors have another shape than in the --arch model (checkpoint vs model): body.0.bias (16,) vs (32,), body.0.weight (16, 8) vs (32, 8), head.weight (4, 16) vs (4, 32)",
        ),
    ],
)
def test_bad_model_inputs_exit_2(run_cli, trained, args, expected):
    result = run_cli("compare", "--model", trained / "raw.pt", "--data", trained / "data.npz", *args)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert expected in result.stderr, result.stderr


def test_output_and_targets_shape_mismatch(run_cli, trained, tmp_path):
    data = np.load(trained / "data.npz")
    np.savez(tmp_path / "short.npz", inputs=data["inputs"], targets=data["targets"][:500])
    result = run_cli("compare", "--model", trained / "raw.pt", "--arch", ARCH, "--data", tmp_path / "short.npz")
    assert result.exit_code == 2 and "key 'targets' has shape (500,) but 'logits' has shape (600, 4)" in result.stderr


def test_data_without_model_and_missing_data(run_cli, trained):
    assert "go with --model" in run_cli("compare", trained / "dump.npz", "--data", trained / "data.npz").stderr
    assert "--model needs --data" in run_cli("compare", "--model", trained / "raw.pt").stderr
    assert "not both" in run_cli("compare", trained / "dump.npz", "--model", trained / "raw.pt", "--arch", ARCH, "--data", trained / "data.npz").stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_cuda_without_cuda_is_a_clear_error(run_cli, trained):
    result = run_cli("compare", "--model", trained / "raw.pt", "--arch", ARCH, "--data", trained / "data.npz", "--device", "cuda")
    assert result.exit_code == 2 and "CUDA is not available" in result.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_gives_the_cpu_comparison(run_cli, trained):
    cpu = _report(run_cli, "--model", trained / "raw.pt", "--arch", ARCH, "--data", trained / "data.npz")
    cuda = _report(run_cli, "--model", trained / "raw.pt", "--arch", ARCH, "--data", trained / "data.npz", "--device", "cuda")
    assert cuda["input"]["model"]["device"] == "cuda"
    assert cuda["losses"]["focal"]["sum"] == pytest.approx(cpu["losses"]["focal"]["sum"], rel=1e-4)
