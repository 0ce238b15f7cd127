"""CSGM (daan.md section 5): the gradient-scaling pair against an explicit per-sample loop, the factor's
floor and balance point, and "off" == a plain Adam step.

Run: PYTHONPATH=src python -m pytest tests/test_csgm.py -q
"""

import copy

import pytest
import torch
from torch import nn

from avgzsl.methods.layers import seed_dropout
from avgzsl.data.types import Batch
from avgzsl.methods import DataDims
from avgzsl.methods.daan import DAAN, DAANConfig
from avgzsl.methods.daan.csgm import (
    CSGM, CSGMSettings, EtaSlot, convergence_rate, modulation_factor, scale_grad_in, scale_grad_out,
)

A, V, W = 16, 32, 8  # audio, video, text sizes of the tiny problems


def small_cfg(**kw) -> DAANConfig:
    base = dict(hidden_dim=16, out_dim=8, n_tokens=4, heads=2, tcn_steps=4, tcn_layers=2, tcn_kernel=3,
                cross_heads=2, cross_ffn_dim=16, mlp_hidden=16, embedding_dropout=0.0, decoder_dropout=0.0,
                additional_dropout=0.0, cross_dropout=0.0, noise=False)
    base.update(kw)
    return DAANConfig(**base)


def make_batch(b: int, seed: int, temporal: bool = False, dtype=torch.float32) -> Batch:
    g = torch.Generator().manual_seed(seed)

    def one():
        if temporal:
            t = 5
            lengths = torch.randint(1, t + 1, (b,), generator=g)
            mask = torch.arange(t)[None] < lengths[:, None]
            a = torch.randn(b, t, A, generator=g, dtype=dtype) * mask[..., None]
            v = torch.randn(b, t, V, generator=g, dtype=dtype) * mask[..., None]
            return Batch(a, v, torch.randint(0, 5, (b,), generator=g), torch.randn(b, W, generator=g, dtype=dtype),
                         mask, mask.clone())
        return Batch(torch.randn(b, A, generator=g, dtype=dtype), torch.randn(b, V, generator=g, dtype=dtype),
                     torch.randint(0, 5, (b,), generator=g), torch.randn(b, W, generator=g, dtype=dtype))

    batch = one()
    batch.negative = one()
    return batch


def sample(batch: Batch, i: int) -> Batch:
    def pick(x):
        return None if x is None else x[i:i + 1]

    out = Batch(pick(batch.audio), pick(batch.video), pick(batch.labels), pick(batch.text),
                pick(batch.audio_mask), pick(batch.video_mask))
    if batch.negative is not None:
        out.negative = sample(batch.negative, i)
    return out


def bn_eval(model: nn.Module) -> None:
    """Training mode (CSGM active) but every BatchNorm on running statistics: samples are independent."""
    model.train()
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm1d):
            mod.eval()


def part_of(model: DAAN) -> dict[int, tuple[int, int] | None]:
    """id(param) -> (modality index, part index) for CSGM-modulated params, None for the others."""
    out = {id(p): None for p in model.parameters()}
    for (m, p), params in model.csgm.parts.items():
        for q in params:
            out[id(q)] = (("audio", "video").index(m), model.csgm.part_names.index(p))
    return out


# --- (c) exactness of the scaling pair --------------------------------------------------------------
@pytest.mark.parametrize("use_qdma,temporal,tcn_input", [
    (True, False, "reshape"), (True, False, "tokens"), (True, True, "reshape"), (False, False, "reshape"),
])
def test_modulated_gradients_equal_per_sample_sum(use_qdma, temporal, tcn_input):
    torch.manual_seed(0)
    cfg = small_cfg(csgm="full", gamma=0.05, rho=3.0, use_qdma=use_qdma, tcn_input=tcn_input)
    model = DAAN(cfg, DataDims(A, V, W, temporal=temporal)).double()
    bn_eval(model)
    # One step first, so that V_o (previous step's ||G||^2 / ||Theta||^2) is set and differs per part.
    model.optimization_step(make_batch(6, 1, temporal, torch.float64), torch.optim.SGD(model.parameters(), lr=1e-2))
    assert model.csgm.v_o is not None

    batch = make_batch(6, 2, temporal, torch.float64)
    model.zero_grad(set_to_none=True)
    loss = model.training_step(batch)["loss"]
    eta = torch.stack([torch.stack([model.csgm.slot(m, p).value for p in model.csgm.part_names])
                       for m in ("audio", "video")]).clone()  # [2, P, B]
    loss.backward()
    modulated = {id(p): p.grad.clone() for p in model.parameters()}
    model.csgm.after_backward()  # noise off: grads stay; slots emptied

    # The factor must be non-trivial for the check to mean anything.
    assert (eta < 0.999).any() and (eta == 1).any()

    # Unmodulated full-batch gradients (eval: CSGM inactive, same forward since BN is eval and dropout 0).
    model.eval()
    model.zero_grad(set_to_none=True)
    model.training_step(batch)["loss"].backward()
    plain = {id(p): p.grad.clone() for p in model.parameters()}

    # Explicit per-sample loop: the batch loss is the mean of per-sample losses (all terms are batch means).
    expected = {id(p): torch.zeros_like(p) for p in model.parameters()}
    where = part_of(model)
    n = len(batch)
    for i in range(n):
        model.zero_grad(set_to_none=True)
        model.training_step(sample(batch, i))["loss"].backward()
        for p in model.parameters():
            if p.grad is None:
                continue
            mp = where[id(p)]
            w = 1.0 if mp is None else float(eta[mp[0], mp[1], i])
            expected[id(p)] += w * p.grad / n

    for name, p in model.named_parameters():
        torch.testing.assert_close(modulated[id(p)], expected[id(p)], rtol=1e-5, atol=1e-8, msg=name)
        if where[id(p)] is None:
            # Everything outside the QDMA parts (cross-attention, head) sees its own, unmodulated gradient.
            torch.testing.assert_close(modulated[id(p)], plain[id(p)], rtol=1e-10, atol=1e-12, msg=name)
    # And the modulation did change the QDMA gradients.
    assert any(not torch.allclose(modulated[id(p)], plain[id(p)]) for p in model.parameters() if where[id(p)])


def test_scaling_pair_leaves_upstream_gradient_unchanged():
    torch.manual_seed(0)
    up, part, down = nn.Linear(5, 7), nn.Sequential(nn.Linear(7, 7), nn.Tanh(), nn.Linear(7, 7)), nn.Linear(7, 1)
    x = torch.randn(9, 5)
    eta = torch.rand(9) * 0.9 + 0.1

    def grads(slot):
        for mod in (up, part, down):
            mod.zero_grad(set_to_none=True)
        h = up(x)
        y = scale_grad_out(part(scale_grad_in(h, slot)), slot)
        (down(y + h).square().sum()).backward()  # a skip path around the part, as QDMA's phi = o + tcn(o)
        return [p.grad.clone() for p in (*up.parameters(), *part.parameters(), *down.parameters())]

    slot = EtaSlot()
    plain = grads(slot)  # value None: identity
    slot.value = eta
    mod = grads(slot)
    n_up, n_part = len(list(up.parameters())), len(list(part.parameters()))
    for a, b in zip(plain[:n_up], mod[:n_up]):
        torch.testing.assert_close(a, b)  # upstream unchanged
    for a, b in zip(plain[n_up + n_part:], mod[n_up + n_part:]):
        torch.testing.assert_close(a, b)  # downstream unchanged
    # The part's gradient is the eta-weighted per-sample sum.
    expected = [torch.zeros_like(p) for p in part.parameters()]
    for i in range(len(x)):
        part.zero_grad(set_to_none=True)
        h = up(x[i:i + 1]).detach()
        down(part(h) + h).square().sum().backward()
        for e, p in zip(expected, part.parameters()):
            e += eta[i] * p.grad
    for e, got in zip(expected, mod[n_up:n_up + n_part]):
        torch.testing.assert_close(got, e, rtol=1e-5, atol=1e-6)


# --- (d) the factor ---------------------------------------------------------------------------------
def test_eta_never_below_gamma_and_balanced_is_one():
    g = torch.Generator().manual_seed(0)
    r_a = torch.cat([torch.rand(1000, generator=g), torch.tensor([1e-30, 1e30, 1e-12, 5.0, 1e-6])])
    r_v = torch.cat([torch.rand(1000, generator=g), torch.tensor([1e30, 1e-30, 1e12, 5.0, 1e-6])])
    for gamma in (0.05, 0.3, 0.45, 0.6, 1.0):
        for rho in (0.1, 1.0, 50.0):
            eta_a, s_a = modulation_factor(r_a, r_v, gamma, rho)
            eta_v, s_v = modulation_factor(r_v, r_a, gamma, rho)
            for eta in (eta_a, eta_v):
                assert torch.isfinite(eta).all() and (eta >= gamma).all() and (eta <= 1).all()
            # Only the dominant modality of a sample is slowed.
            assert (eta_a[s_a <= 1] == 1).all() and (eta_v[s_v <= 1] == 1).all()
            # Balanced samples: exactly 1 for both.
            assert eta_a[-2:].eq(1).all() and eta_v[-2:].eq(1).all()
    # Extreme dominance hits the floor.
    eta, _ = modulation_factor(torch.tensor([1e30]), torch.tensor([1e-30]), 0.45, 1.0)
    assert eta.item() == pytest.approx(0.45)


@pytest.mark.parametrize("mode", ["vc", "full"])
def test_prepare_extreme_and_balanced_embeddings(mode):
    g = torch.Generator().manual_seed(0)
    params = {(m, p): [nn.Parameter(torch.randn(3, generator=g))] for m in ("audio", "video") for p in ("attn", "tcn")}
    csgm = CSGM(CSGMSettings(mode=mode, gamma=0.3, rho=2.0, noise=False), params)
    b = 64
    w, w_n = torch.randn(b, 8, generator=g), torch.randn(b, 8, generator=g)
    # Audio perfectly placed (far negative), video useless: audio dominates hugely.
    a, a_n = w.clone(), w + 1e6
    v, v_n = torch.randn(b, 8, generator=g) * 1e6, w.clone()
    eta = csgm.prepare({"theta_a": a, "theta_v": v, "theta_w": w}, {"theta_a": a_n, "theta_v": v_n, "theta_w": w_n})
    assert torch.isfinite(eta).all() and (eta >= 0.3).all()
    assert torch.allclose(eta[0], torch.full_like(eta[0], 0.3)) and (eta[1] == 1).all()
    if mode == "full":  # equal V_o for both modalities keeps the balance point exact
        csgm.v_o = torch.full((2, 2), 0.37)
    # Identical audio and video embeddings: every sample balanced, eta exactly 1.
    x, x_n = torch.randn(b, 8, generator=g), torch.randn(b, 8, generator=g)
    eta = csgm.prepare({"theta_a": x, "theta_v": x.clone(), "theta_w": w},
                       {"theta_a": x_n, "theta_v": x_n.clone(), "theta_w": w_n})
    assert (eta == 1).all()


def test_convergence_rate_range():
    g = torch.Generator().manual_seed(0)
    t = [torch.randn(100, 8, generator=g) * s for s in (1e-3, 1.0, 1e3, 1.0)]
    vc = convergence_rate(*t, margin=1.0, eps=1e-2)
    assert (vc > 0).all() and (vc <= (1 + 1e-2) ** 2).all()


def test_csgm_off_equals_plain_adam():
    torch.manual_seed(0)
    cfg = small_cfg(csgm="off", embedding_dropout=0.2, decoder_dropout=0.3, additional_dropout=0.5, cross_dropout=0.1)
    model = DAAN(cfg, DataDims(A, V, W))
    twin = copy.deepcopy(model)
    opt, opt_twin = model.configure_optimizer(), torch.optim.Adam(twin.parameters(), lr=cfg.lr,
                                                                  weight_decay=cfg.weight_decay, fused=True)
    model.train()
    twin.train()
    for step in range(3):
        batch = make_batch(8, step)
        torch.manual_seed(100 + step)
        seed_dropout(100 + step)
        model.optimization_step(batch, opt)
        torch.manual_seed(100 + step)
        seed_dropout(100 + step)
        opt_twin.zero_grad()
        twin.training_step(batch)["loss"].backward()
        opt_twin.step()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(p, q), name
    for (name, b), c in zip(model.named_buffers(), twin.buffers()):
        assert torch.equal(b, c), name


def test_noise_only_on_modulated_parts_and_scaled_by_std():
    torch.manual_seed(0)
    model = DAAN(small_cfg(csgm="full", noise=True), DataDims(A, V, W))
    bn_eval(model)
    batch = make_batch(8, 0)
    model.zero_grad(set_to_none=True)
    model.training_step(batch)["loss"].backward()
    before = {id(p): p.grad.clone() for p in model.parameters()}
    model.csgm.after_backward()
    where = part_of(model)
    for p in model.parameters():
        diff = p.grad - before[id(p)]
        if where[id(p)] is None or p.numel() == 1:
            assert torch.equal(diff, torch.zeros_like(diff))
        elif p.numel() > 100:
            assert diff.std() == pytest.approx(before[id(p)].std(correction=0).item(), rel=0.3)


def test_diagnostics_accumulate_and_reset():
    torch.manual_seed(0)
    model = DAAN(small_cfg(csgm="full"), DataDims(A, V, W))
    opt = model.configure_optimizer()
    model.train()
    for step in range(3):
        model.optimization_step(make_batch(8, step), opt)
    diag = model.epoch_diagnostics()
    for m in ("audio", "video"):
        for p in ("attn", "tcn"):
            assert 0.45 <= diag[f"csgm/eta_{m}_{p}"] <= 1
            assert 0 <= diag[f"csgm/dominant_{m}_{p}"] <= 1
            assert diag[f"csgm/vo_{m}_{p}"] > 0
        assert diag[f"csgm/vc_{m}"] > 0
    assert all(isinstance(v, float) for v in diag.values())
    assert model.epoch_diagnostics() == {}  # reset
    vc_model = DAAN(small_cfg(csgm="vc"), DataDims(A, V, W))
    vc_model.train()
    vc_model.optimization_step(make_batch(8, 0), vc_model.configure_optimizer())
    assert not any(k.startswith("csgm/vo_") for k in vc_model.epoch_diagnostics())
    assert DAAN(small_cfg(csgm="off"), DataDims(A, V, W)).epoch_diagnostics() == {}
