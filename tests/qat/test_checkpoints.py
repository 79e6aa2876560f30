"""QAT checkpoints hold safetensors and JSON only: optimizer and RNG states round-trip exactly, a crafted pickle in a
checkpoint folder never runs, and every damaged checkpoint is refused with one line naming it and the fix."""

import json
import os
import random
import struct

import numpy as np
import pytest
import torch

from diffusia.errors import DiffusiaError
from diffusia.qat.checkpoints import (
    checkpoint_dir,
    latest_checkpoint,
    load_checkpoint,
    restoring,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from diffusia.qat.train import QATConfig, run_qat

STATE = {"step": 3, "losses": [0.5, 0.25, 0.125], "config": {}, "recipe": {}, "calibration": {}, "world_size": 2}


class Payload:
    """Unpickling it creates `marker` (what a hostile rng.pt would do with a shell command)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def _trained():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(
        [
            {"params": list(model[0].parameters()), "lr": 1e-2},
            {"params": list(model[2].parameters()), "lr": 1e-3, "weight_decay": 0.0},
        ]
    )
    for _ in range(2):
        model(torch.randn(5, 3)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    return model, opt


@pytest.fixture
def saved(tmp_path):
    model, opt = _trained()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # a cached Gaussian in numpy's state
    states = [rng_state(), rng_state()]
    path = save_checkpoint(tmp_path / "out", 3, model, opt, states, STATE)
    return path, model, opt, states


def test_only_safetensors_and_json(saved):
    path = saved[0]
    assert sorted(p.name for p in path.iterdir()) == [
        "model.safetensors",
        "optimizer.json",
        "optimizer.safetensors",
        "rng.json",
        "rng.safetensors",
        "state.json",
    ]


def test_round_trip_is_exact(saved):
    path, model, opt, states = saved
    weights, optim, rngs, state = load_checkpoint(path)
    assert state["step"] == 3 and state["losses"] == STATE["losses"]
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    expected = opt.state_dict()
    assert optim["param_groups"] == expected["param_groups"]  # betas back as a tuple
    assert optim["state"].keys() == expected["state"].keys()
    for idx, entries in expected["state"].items():
        assert all(torch.equal(optim["state"][idx][k], v) for k, v in entries.items())
    fresh = _trained()[1]
    fresh.load_state_dict(optim)
    assert fresh.state_dict()["param_groups"] == expected["param_groups"]
    assert len(rngs) == 2
    set_rng_state(rngs[1])
    after_load = random.random(), np.random.standard_normal(3), torch.rand(3)
    set_rng_state(states[1])
    original = random.random(), np.random.standard_normal(3), torch.rand(3)
    assert after_load[0] == original[0]
    np.testing.assert_array_equal(after_load[1], original[1])
    assert torch.equal(after_load[2], original[2])


def test_crafted_pickle_never_runs(tmp_path, monkeypatch, capsys):
    control = tmp_path / "control-ran"
    torch.save(Payload(control), tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)  # what the old loader did: the payload runs
    assert control.is_dir()

    out, marker = tmp_path / "qat", tmp_path / "payload-ran"
    step = checkpoint_dir(out) / "step-0000003"
    step.mkdir(parents=True)
    (step / "state.json").write_text(json.dumps(STATE))
    for name in ("rng.pt", "optimizer.pt"):
        torch.save(Payload(marker), step / name)
    assert latest_checkpoint(out) == step
    with pytest.raises(DiffusiaError, match="old pickle format.*without --resume.*or delete") as e:
        run_qat(QATConfig(out=str(out), resume=True, progress=False))
    assert "\n" not in str(e.value) and str(step) in str(e.value)
    from diffusia import cli

    monkeypatch.setattr("sys.argv", ["diffusia", "qat", "--resume", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.startswith("diffusia: error: checkpoint") and "\n" not in err
    assert not marker.exists()  # neither run nor the CLI unpickled anything
    assert (step / "rng.pt").is_file()  # and nothing was deleted


def _header(obj) -> bytes:
    raw = json.dumps(obj).encode()
    return struct.pack("<Q", len(raw)) + raw


def _edit_json(name, change):
    def damage(path):
        data = json.loads((path / name).read_text())
        (path / name).write_text(json.dumps(change(data)))

    return damage


DAMAGE = {
    "truncated model": lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:-7]),
    "empty model": lambda p: (p / "model.safetensors").write_bytes(b""),
    "optimizer header is a JSON array": lambda p: (p / "optimizer.safetensors").write_bytes(_header([1, 2])),
    "rng header lacks data_offsets": lambda p: (p / "rng.safetensors").write_bytes(
        _header({"0.torch": {"dtype": "U8", "shape": [1]}})
    ),
    "state.json lacks keys": _edit_json("state.json", lambda d: {k: v for k, v in d.items() if k != "losses"}),
    "state.json is a list": lambda p: (p / "state.json").write_text("[1, 2]"),
    "state.json is not JSON": lambda p: (p / "state.json").write_text('{"step": 3,'),
    "state.json has a wrong type": _edit_json("state.json", lambda d: {**d, "step": "three"}),
    "state.json of format v1": _edit_json("state.json", lambda d: {**d, "version": 1}),
    "state.json is not UTF-8": lambda p: (p / "state.json").write_bytes(b"\xff\xfe{}"),
    "rng.json missing": lambda p: (p / "rng.json").unlink(),
    "rng.json is an object": lambda p: (p / "rng.json").write_text("{}"),
    "rng.json of one process": _edit_json("rng.json", lambda d: d[:1]),
    "rng.json python state cut": _edit_json("rng.json", lambda d: [{**d[0], "python": d[0]["python"][:1]}, d[1]]),
    "optimizer.json lacks param_groups": _edit_json("optimizer.json", lambda d: {"state": d["state"]}),
    "optimizer tensor of no parameter": lambda p: (p / "optimizer.safetensors").write_bytes(
        _header({"state.x.exp_avg": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}})
    ),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_checkpoint_is_one_line_error(saved, damage):
    path = saved[0]
    damage(path)
    with pytest.raises(DiffusiaError) as e:
        load_checkpoint(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"checkpoint {path} is unreadable") and "delete it" in msg


def test_checkpoint_that_does_not_fit_is_one_line_error(saved):
    path, model = saved[0], saved[1]
    weights = load_checkpoint(path)[0]
    with pytest.raises(DiffusiaError, match=r"does not fit this run \(Error\(s\) in loading") as e:
        with restoring(path):
            torch.nn.Linear(3, 5).load_state_dict(weights)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    with restoring(path):
        model.load_state_dict(weights)  # a fitting one passes
