"""lib3d.nn.weights: reading files safely, strict loading with complete error messages, key remapping."""

from __future__ import annotations

import argparse
import os

import pytest
import torch
from torch import nn

from lib3d.nn import WeightFileError, check_state_dict, read_weight_file, remap_keys, strict_load


class _CodeInPickle:
    """Unpickling this runs ``os.getcwd()``: harmless, but code all the same."""

    def __reduce__(self):
        return (os.getcwd, ())


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))


def test_read_torch_file_roundtrip(tmp_path):
    sd = _net().state_dict()
    torch.save(sd, tmp_path / "w.pth")
    got = read_weight_file(tmp_path / "w.pth")
    assert got.keys() == sd.keys()
    for k in sd:
        torch.testing.assert_close(got[k], sd[k])


def test_read_safetensors(tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in _net().state_dict().items()}
    save_file(sd, str(tmp_path / "w.safetensors"))
    got = read_weight_file(tmp_path / "w.safetensors")
    assert got.keys() == sd.keys()
    torch.testing.assert_close(got["0.weight"], sd["0.weight"])


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(2), "payload": _CodeInPickle()}, path)
    with pytest.raises(WeightFileError) as e:
        read_weight_file(path)
    msg = str(e.value)
    assert "evil.pth" in msg and "refused" in msg and "getcwd" in msg
    assert "\n" not in msg


def test_allowed_globals_lets_a_trusted_class_through(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "opts": argparse.Namespace(lr=1.0)}, path)
    with pytest.raises(WeightFileError, match="refused"):
        read_weight_file(path)
    got = read_weight_file(path, allowed_globals=[argparse.Namespace])
    assert got["opts"].lr == 1.0


def test_missing_and_junk_files(tmp_path):
    with pytest.raises(WeightFileError, match="no such weight file"):
        read_weight_file(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(WeightFileError, match="junk.pth: not a weights file"):
        read_weight_file(tmp_path / "junk.pth")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(WeightFileError, match="safetensors"):
        read_weight_file(tmp_path / "junk.safetensors")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(WeightFileError, match="dictionary"):
        read_weight_file(tmp_path / "list.pth")


def test_strict_load_lists_every_problem_and_loads_nothing():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    sd = {k: torch.randn_like(v.float()).to(v.dtype) for k, v in net.state_dict().items()}
    del sd["0.bias"]
    sd["extra.weight"] = torch.zeros(1)
    sd["2.weight"] = torch.zeros(5, 4)
    with pytest.raises(WeightFileError) as e:
        strict_load(net, sd, "toy net")
    msg = str(e.value)
    assert "cannot load toy net" in msg
    assert "1 missing key(s): 0.bias" in msg
    assert "1 unexpected key(s): extra.weight" in msg
    assert "2.weight: file (5, 4) vs module (2, 4)" in msg
    for k, v in net.state_dict().items():  # nothing was copied
        torch.testing.assert_close(v, before[k])


def test_strict_load_truncates_long_lists():
    net = nn.Sequential(*[nn.Linear(1, 1) for _ in range(15)])
    with pytest.raises(WeightFileError) as e:
        strict_load(net, {}, "15 linears")
    msg = str(e.value)
    assert "30 missing key(s)" in msg and "and 20 more" in msg


def test_strict_load_success_and_optional_counters():
    src, dst = _net(), _net()
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    strict_load(dst, sd, "toy")
    for k, v in sd.items():
        torch.testing.assert_close(dst.state_dict()[k], v)


def test_check_state_dict_rejects_non_tensors():
    with pytest.raises(WeightFileError, match="non-tensor"):
        check_state_dict({"a": torch.zeros(1)}, {"a": 3.0}, "x")


def test_remap_keys_rules():
    sd = {"backbone.res2.0.conv1.weight": 1, "backbone.stem.conv1.weight": 2, "head.fc.weight": 3, "keep": 4}
    out = remap_keys(sd, [(r"backbone\.res(\d)\.", r"layer\1."), (r"backbone\.stem\.", ""), (r"head\.", None)])
    assert out == {"layer2.0.conv1.weight": 1, "conv1.weight": 2, "keep": 4}
    with pytest.raises(WeightFileError, match="both renamed"):
        remap_keys({"a.x": 1, "b.x": 2}, [(r"[ab]\.", "")])
