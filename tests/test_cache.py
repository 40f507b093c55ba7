"""The model cache: trains once, reloads bit for bit, retrains on any change, survives damage."""

import pytest
import torch
from torch import nn

from diffnotes import cache


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFNOTES_CACHE", str(tmp_path))
    monkeypatch.setenv("DIFFNOTES_PROFILE", "ci")
    return tmp_path


def build():
    return nn.Linear(3, 2)


def make_fit(calls, scale=1.0):
    def fit(model):
        calls.append(1)
        with torch.no_grad():
            model.weight.fill_(scale)
        return model

    return fit


def test_trains_once_then_loads(tmp_cache):
    calls = []
    a = cache.cached("chapter/model", {"lr": 1e-3}, build, make_fit(calls))
    b = cache.cached("chapter/model", {"lr": 1e-3}, build, make_fit(calls))
    assert len(calls) == 1 and not b.training
    for p, q in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(p, q)
    files = list(tmp_cache.rglob("*"))
    assert not [f for f in files if f.name.endswith(".tmp")]  # written atomically


def test_config_profile_and_code_changes_retrain(monkeypatch):
    calls = []
    cache.cached("c/m", {"lr": 1e-3}, build, make_fit(calls))
    cache.cached("c/m", {"lr": 2e-3}, build, make_fit(calls))  # config
    assert len(calls) == 2
    monkeypatch.setenv("DIFFNOTES_PROFILE", "book")
    cache.cached("c/m", {"lr": 1e-3}, build, make_fit(calls))  # profile
    assert len(calls) == 3

    def other_fit(model):  # different code, same config
        calls.append(1)
        return model

    cache.cached("c/m", {"lr": 1e-3}, build, other_fit)
    assert len(calls) == 4
    cache.cached("c/m", {"lr": 1e-3}, build, other_fit)
    assert len(calls) == 4


def test_damaged_entry_is_retrained_not_loaded(tmp_cache):
    calls = []
    cache.cached("c/m", {}, build, make_fit(calls, 2.0))
    path = cache.entry_path("c/m", {}, profile="ci")
    data = bytearray(path.read_bytes())
    data[-4] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="corrupt"):
        model = cache.cached("c/m", {}, build, make_fit(calls, 2.0))
    assert len(calls) == 2 and torch.equal(model.weight, torch.full((2, 3), 2.0))


def test_bad_input():
    with pytest.raises(ValueError, match="name"):
        cache.cached("", {}, build, lambda m: m)
    with pytest.raises(ValueError, match="config"):
        cache.cached("c/m", [1], build, lambda m: m)
    with pytest.raises(ValueError, match="fit"):
        cache.cached("c/m", {}, build, lambda m: 3)
    with pytest.raises(ValueError, match="build"):
        cache.cached("c/m", {}, lambda: 3, lambda m: m)


def keep(model):
    return model


def test_seed_is_part_of_the_key_and_sets_the_initial_weights(monkeypatch):
    a = cache.cached("chapter/seeded", {}, build, keep, seed=0)
    b = cache.cached("chapter/seeded", {}, build, keep, seed=1)
    c = cache.cached("chapter/seeded", {}, build, keep, seed=1)
    assert not torch.equal(a.weight, b.weight)  # another seed: another entry, other weights
    assert torch.equal(b.weight, c.weight)
    torch.manual_seed(123)  # the caller's RNG history does not leak into the initial weights
    monkeypatch.setenv("DIFFNOTES_SEED", "1")
    d = cache.cached("chapter/seeded-again", {}, build, keep)  # default: DIFFNOTES_SEED
    assert torch.equal(d.weight, b.weight)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        cache.cached("chapter/seeded", {}, build, keep, seed=-1)


def test_notebook_local_class_source_is_in_the_key():
    # a class without a source file (as in a notebook): its methods' source enters the code hash
    namespace = {"nn": nn}
    exec("class Local(nn.Module):\n    def forward(self, x):\n        return x\n", namespace)
    one = namespace["Local"]
    exec("class Local(nn.Module):\n    def forward(self, x):\n        return 2 * x\n", namespace)
    two = namespace["Local"]
    assert cache._code_hash(one(), build, keep) != cache._code_hash(two(), build, keep)


def test_entry_path_stays_inside_the_cache(tmp_cache):
    path = cache.entry_path("../../escape", {}, profile="../x", seed=0)
    assert tmp_cache.resolve() in path.resolve().parents


def test_read_only_cache_still_loads_what_it_holds(tmp_cache):
    calls = []
    cache.cached("c/m", {}, build, make_fit(calls), verbose=False)
    for folder in (tmp_cache / "c_m", tmp_cache):
        folder.chmod(0o555)
    try:
        cache.cached("c/m", {}, build, make_fit(calls), verbose=False)
        assert calls == [1]  # trained once, then loaded from the read-only cache
    finally:
        for folder in (tmp_cache, tmp_cache / "c_m"):
            folder.chmod(0o755)
