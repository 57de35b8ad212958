from dataclasses import replace

import pytest
import torch

from moodlane.engine.symbolic.checkpoint import CheckpointError, load_symbolic, save_symbolic
from moodlane.engine.symbolic.model import TINY, KVCache, SymbolicConfig, SymbolicLM, for_inference

CFG = replace(TINY, attributes=("note_density", "velocity_mean"), bin_edges=((0.5,) * 7, (60.0,) * 7))


def test_streaming_equals_full_pass():
    torch.manual_seed(0)
    m = SymbolicLM(CFG).eval()
    idx = torch.randint(4, CFG.vocab_size, (2, 40))
    attrs = torch.randint(0, CFG.n_bins + 1, (2, 40, CFG.n_attr))
    full, _ = m(idx, attrs, targets=idx)  # (B, T, V)
    cache = KVCache()
    m(idx[:, :25], attrs[:, :25], cache=cache)  # prefix in one go, then token by token
    for t in range(25, 40):
        step, _ = m(idx[:, t : t + 1], attrs[:, t : t + 1], cache=cache)
        assert (step[:, 0] - full[:, t]).abs().max() < 1e-5
    assert cache.length == 40


def test_precomputed_attribute_embedding_equals_bins():
    torch.manual_seed(0)
    m = SymbolicLM(CFG).eval()
    idx = torch.randint(4, CFG.vocab_size, (1, 6))
    bins = torch.tensor([3, 5])
    by_bins, _ = m(idx, bins.expand(1, 6, 2))
    by_emb, _ = m(idx, attr_emb=m.attribute_embedding(bins))
    assert torch.allclose(by_bins, by_emb, atol=1e-6)


def test_int8_inference_keeps_the_distribution():
    torch.manual_seed(0)
    cfg = replace(CFG, n_embd=64, n_layer=2)
    m = SymbolicLM(cfg).eval()
    assert for_inference(m, "fp32") is m
    q8 = for_inference(m, "int8")
    assert any("quantized" in type(x).__module__ for x in q8.modules())
    idx = torch.randint(4, cfg.vocab_size, (1, 20))
    attrs = torch.randint(0, cfg.n_bins, (1, 20, cfg.n_attr))
    p32 = torch.softmax(m(idx, attrs)[0], -1)
    p8 = torch.softmax(q8(idx, attrs)[0], -1)
    assert (p32 - p8).abs().sum() < 0.05  # total variation well under 5 %
    with pytest.raises(ValueError, match="precision"):
        for_inference(m, "fp8")


def test_attributes_change_the_prediction():
    torch.manual_seed(0)
    m = SymbolicLM(CFG).eval()
    idx = torch.randint(4, CFG.vocab_size, (1, 10))
    lo = torch.zeros(1, 10, 2, dtype=torch.long)
    hi = torch.full((1, 10, 2), 7, dtype=torch.long)
    assert not torch.allclose(m(idx, lo)[0], m(idx, hi)[0])


def test_training_step_lowers_loss():
    torch.manual_seed(0)
    m = SymbolicLM(CFG)
    opt = torch.optim.AdamW(m.parameters(), 3e-3)
    idx = torch.randint(4, CFG.vocab_size, (4, 32))
    attrs = torch.zeros(4, 32, 2, dtype=torch.long)
    losses = []
    for _ in range(30):
        _, loss = m(idx[:, :-1], attrs[:, :-1], idx[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_context_limit_is_enforced():
    m = SymbolicLM(CFG)
    with pytest.raises(ValueError, match="block_size"):
        m(torch.zeros(1, CFG.block_size + 1, dtype=torch.long), torch.zeros(1, CFG.block_size + 1, 2, dtype=torch.long))


def test_config_validates():
    with pytest.raises(ValueError):
        SymbolicConfig(n_embd=30, n_head=4)
    assert SymbolicConfig.from_json(CFG.to_json()) == CFG


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    m = SymbolicLM(CFG).eval()
    save_symbolic(m, tmp_path / "ck", half=False)
    m2, meta = load_symbolic(tmp_path / "ck")
    assert meta["config"]["attributes"] == list(CFG.attributes)
    idx = torch.randint(4, CFG.vocab_size, (1, 12))
    a = torch.zeros(1, 12, 2, dtype=torch.long)
    assert torch.equal(m(idx, a)[0], m2(idx, a)[0])


def test_bad_checkpoints_say_what_is_wrong(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        load_symbolic(tmp_path / "nothing")
    m = SymbolicLM(CFG)
    save_symbolic(m, tmp_path / "ck")
    (tmp_path / "ck.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_symbolic(tmp_path / "ck")
    save_symbolic(m, tmp_path / "ck2")
    (tmp_path / "ck2.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config"):
        load_symbolic(tmp_path / "ck2")
    save_symbolic(SymbolicLM(replace(CFG, n_embd=64)), tmp_path / "ck3")  # weights of another size
    cfg_file = tmp_path / "ck3.json"
    cfg_file.write_text(cfg_file.read_text().replace('"n_embd": 64', '"n_embd": 32'))
    with pytest.raises(CheckpointError, match="does not match"):
        load_symbolic(tmp_path / "ck3")
