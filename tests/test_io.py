"""diffnotes.io: checksummed safetensors files and the two on-disk layouts of optimizer state."""

import json

import pytest
import torch

import diffnotes as dn
from diffnotes.io import (
    flatten_optimizer,
    join_tensors,
    read_safetensors,
    split_tensors,
    tensor_digest,
    unflatten_optimizer,
    write_safetensors,
)


def adam_after_a_step(seed: int = 0) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, betas=(0.8, 0.99))
    net(torch.randn(5, 3)).square().mean().backward()
    opt.step()
    return net, opt


def test_round_trip_keeps_tensors_and_metadata(tmp_path):
    tensors = {"a": torch.randn(3, 2), "b": torch.arange(4), "c": torch.ones(2).half()}
    path = tmp_path / "sub" / "x.safetensors"
    write_safetensors(path, tensors, {"format": "test", "step": "3"})
    back, meta = read_safetensors(path)
    assert back.keys() == tensors.keys()
    for k in tensors:
        torch.testing.assert_close(back[k], tensors[k], rtol=0, atol=0)
    assert meta == {"format": "test", "step": "3", "sha256": tensor_digest(tensors)}
    assert [p.name for p in path.parent.iterdir()] == ["x.safetensors"]  # no temp file left


def test_damaged_files_are_refused(tmp_path):
    path = tmp_path / "x.safetensors"
    write_safetensors(path, {"a": torch.zeros(64)}, {})
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one tensor byte
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch"):
        read_safetensors(path)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match="corrupt or half-written"):
        read_safetensors(path)
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_safetensors(tmp_path / "missing.safetensors")


def test_digest_depends_on_names_dtypes_and_bytes():
    base = tensor_digest({"a": torch.zeros(2)})
    assert base == tensor_digest({"a": torch.zeros(2)})
    assert base != tensor_digest({"b": torch.zeros(2)})
    assert base != tensor_digest({"a": torch.zeros(2, dtype=torch.float64)})
    assert base != tensor_digest({"a": torch.tensor([0.0, 1.0])})


def test_flat_layout_is_the_checkpoint_format():
    """The names and JSON keys of diffnotes-checkpoint-v1: old checkpoints must stay readable."""
    _, opt = adam_after_a_step()
    tensors, groups_json = flatten_optimizer(opt)
    assert set(tensors) == {
        f"optim.{i}.{k}" for i in range(4) for k in ("step", "exp_avg", "exp_avg_sq")
    }
    meta = json.loads(groups_json)
    assert set(meta) == {"param_groups", "scalars"} and meta["scalars"] == {}
    assert meta["param_groups"][0]["betas"] == [0.8, 0.99]


def test_flat_layout_round_trip_continues_the_same_run(tmp_path):
    net, opt = adam_after_a_step()
    tensors, groups_json = flatten_optimizer(opt)
    write_safetensors(tmp_path / "o.safetensors", tensors, {"optimizer": groups_json})
    tensors, meta = read_safetensors(tmp_path / "o.safetensors")
    twin, _ = adam_after_a_step()
    twin.load_state_dict(net.state_dict())
    twin_opt = torch.optim.AdamW(twin.parameters(), lr=0.5)
    twin_opt.load_state_dict(unflatten_optimizer(tensors, meta["optimizer"]))
    x = torch.randn(5, 3)
    for model, o in ((net, opt), (twin, twin_opt)):
        o.zero_grad()
        model(x).square().mean().backward()
        o.step()
    for a, b in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_flat_layout_keeps_non_tensor_state():
    class CountingSGD(torch.optim.SGD):
        def step(self, closure=None):
            for p in self.param_groups[0]["params"]:
                self.state[p]["count"] = self.state[p].get("count", 0) + 1
            return super().step(closure)

    w = torch.nn.Parameter(torch.ones(2))
    opt = CountingSGD([w], lr=0.1, momentum=0.9)
    w.sum().backward()
    opt.step()
    tensors, groups_json = flatten_optimizer(opt)
    assert set(tensors) == {"optim.0.momentum_buffer"}
    assert json.loads(groups_json)["scalars"] == {"0.count": 1}
    state = unflatten_optimizer(tensors, groups_json)["state"]
    assert state[0]["count"] == 1
    torch.testing.assert_close(state[0]["momentum_buffer"], torch.ones(2))


def test_nested_layout_names_tensors_by_path_and_round_trips_through_json():
    _, opt = adam_after_a_step()
    sd = opt.state_dict()
    tensors, skeleton = split_tensors(sd, "opt")
    assert "opt.state.0.exp_avg" in tensors and "opt.state.3.step" in tensors
    assert len(tensors) == 12  # every tensor, and only tensors
    back = join_tensors(json.loads(json.dumps(skeleton)), tensors)
    assert back["state"].keys() == sd["state"].keys()  # int parameter indices survive JSON
    for i, state in sd["state"].items():
        for k, v in state.items():
            torch.testing.assert_close(back["state"][i][k], v, rtol=0, atol=0)
    assert back["param_groups"][0]["betas"] == [0.8, 0.99]  # tuples come back as lists


def test_nested_layout_handles_lists_and_plain_values():
    obj = {"a": [torch.ones(2), 3, "x"], 7: {"b": None, "c": (torch.zeros(1), 1.5)}}
    tensors, skeleton = split_tensors(obj, "p")
    assert set(tensors) == {"p.a.0", "p.7.c.0"}
    back = join_tensors(json.loads(json.dumps(skeleton)), tensors)
    assert back["a"][1:] == [3, "x"] and back[7]["b"] is None and back[7]["c"][1] == 1.5
    torch.testing.assert_close(back[7]["c"][0], torch.zeros(1))


def test_io_is_a_lazy_submodule():
    assert "io" in dn.SUBMODULES
    assert dn.io.write_safetensors is write_safetensors
