"""Stochastic hard attention (Xu et al. 2015, section 4.1): the estimator against the exact
gradient, the baseline, the sampler, teacher forcing against `step()`, overfitting, decoding,
checkpoints, resume and config validation. Tiny models, CPU, seeded.

The exact gradient comes from enumerating every path of regions: for one image and a caption
of T words over P regions, E_s[CE] = sum over the P^T paths s of p(s | a) CE(y | s, a), where
teacher forcing with the path fixed gives both p(s | a) (the alphas along it) and CE.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from captioner.config import Config, ConfigError, ModelConfig, TrainConfig, config_from_dict, load_config
from captioner.model.hard_attention import (EXPECTED, RegionSampler, expected_focus, fixed_focus, read_context,
                                            region_map)
from captioner.scoring.losses import (caption_log_likelihood, hard_attention_terms, masked_cross_entropy,
                                      updated_baseline)
from captioner.words.search import beam_search, greedy_search
from conftest import make_tiny_checkpoint, tiny_decoder

START, END, PAD = 1, 2, 0
REPO = Path(__file__).resolve().parents[1]
P, E = 4, 8
CAPTION = torch.tensor([[START, 5, 6, END]])  # T = 3 words: 4^3 = 64 paths to enumerate
T = CAPTION.size(1) - 1


def _toy():
    torch.manual_seed(0)
    return tiny_decoder(attention="hard"), torch.randn(1, P, E) * 2  # scaled: alpha far from uniform


def _exact(dec, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], float]:
    """d E_s[CE] / d features and / d parameters, by enumeration; and E_s[R] = -E_s[CE]."""
    paths = torch.tensor(list(itertools.product(range(P), repeat=T)))  # (P^T, T)
    n = len(paths)
    feats = image.expand(n, P, E).clone().requires_grad_()  # one copy per path
    caps = CAPTION.expand(n, -1)
    out = dec(feats, caps, regions=paths)
    p_path = out.alphas.gather(2, paths.unsqueeze(2)).squeeze(2).prod(dim=1)  # (P^T,) p(s | a)
    assert float(p_path.detach().sum()) == pytest.approx(1.0, abs=1e-5)
    objective = (p_path * -caption_log_likelihood(out.logits, caps[:, 1:], caps[:, 1:] != PAD)).sum()
    dec.zero_grad()
    objective.backward()
    return feats.grad.sum(dim=0), _grads(dec), -float(objective.detach())


def _estimate(dec, image: torch.Tensor, *, n: int, baseline: float, reinforce_weight: float,
              seed: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The training loss's gradient on n copies of the image, each with its own sample: per copy
    (n, P, E), the single-sample estimate of d E_s[CE] / d features; and the parameters' mean."""
    feats = image.expand(n, P, E).clone().requires_grad_()
    caps = CAPTION.expand(n, -1)
    targets, mask = caps[:, 1:], caps[:, 1:] != PAD
    out = dec(feats, caps, rule=RegionSampler.draw(torch.Generator().manual_seed(seed), n, 0.0))
    reward = caption_log_likelihood(out.logits.detach(), targets, mask)
    terms = hard_attention_terms(out.alphas, out.regions, mask, reward, torch.tensor(baseline),
                                 reinforce_weight=reinforce_weight, entropy_weight=0.0)
    loss = masked_cross_entropy(out.logits, targets, mask) + terms.surrogate
    dec.zero_grad()
    loss.backward()
    return feats.grad * n, _grads(dec)


def _grads(dec) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in dec.named_parameters()}


def _relative_error(estimate: dict[str, torch.Tensor] | torch.Tensor, exact: dict[str, torch.Tensor] | torch.Tensor,
                    prefix: str = "") -> float:
    """|estimate - exact| / |exact|, over the tensors (or the named gradients under `prefix`)."""
    def flat(ts):
        if isinstance(ts, torch.Tensor):
            return ts.flatten()
        return torch.cat([t.flatten() for k, t in ts.items() if k.startswith(prefix)])
    return float((flat(estimate) - flat(exact)).norm() / flat(exact).norm())


# ----------------------------------------------------------------------------- the estimator
def test_estimator_mean_is_the_exact_gradient():
    """With lambda_r = 1 (the default) and no entropy bonus, the training
    gradient is an unbiased estimate of d E_s[CE]: its mean over 10,000 samples matches the
    enumerated gradient, for the image's features and for every parameter; without the
    REINFORCE term (pathwise gradient alone) it does not, and the attention's own parameters
    get no gradient at all."""
    dec, image = _toy()
    exact_feats, exact_params, mean_reward = _exact(dec, image)
    per_copy, params = _estimate(dec, image, n=10_000, baseline=mean_reward, reinforce_weight=1.0)
    mean, se = per_copy.mean(dim=0), per_copy.std(dim=0) / per_copy.size(0) ** 0.5
    assert float(((mean - exact_feats).abs() / se).max()) < 5.0  # within 5 standard errors everywhere
    assert _relative_error(mean, exact_feats) < 0.05
    assert _relative_error(params, exact_params) < 0.05
    assert _relative_error(params, exact_params, "attention.") < 0.05
    pathwise, pathwise_params = _estimate(dec, image, n=10_000, baseline=mean_reward, reinforce_weight=0.0)
    assert _relative_error(pathwise.mean(dim=0), exact_feats) > 0.1
    assert _relative_error(pathwise_params, exact_params, "attention.") == pytest.approx(1.0)


def test_baseline_reduces_the_variance_without_changing_the_mean():
    dec, image = _toy()
    exact_feats, _, mean_reward = _exact(dec, image)
    plain, _ = _estimate(dec, image, n=5_000, baseline=0.0, reinforce_weight=1.0)
    based, _ = _estimate(dec, image, n=5_000, baseline=mean_reward, reinforce_weight=1.0)
    for per_copy in (plain, based):
        se = per_copy.std(dim=0) / per_copy.size(0) ** 0.5
        assert float(((per_copy.mean(dim=0) - exact_feats).abs() / se).max()) < 5.0
    reduction = float(plain.var(dim=0).sum() / based.var(dim=0).sum())
    assert reduction > 5.0, reduction


def test_entropy_bonus_is_the_mean_entropy_of_alpha():
    """Its value is -lambda_e * mean H(alpha_t) over real steps; the REINFORCE part adds
    gradient, not value; and its gradient raises the entropy."""
    alphas = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25], [0.9, 0.05, 0.05, 0.0]])
    alphas = alphas.view(1, 3, 4).clone().requires_grad_()  # (B, T, P)
    mask = torch.tensor([[True, True, False]])
    regions = torch.tensor([[0, EXPECTED, 1]])
    terms = hard_attention_terms(alphas, regions, mask, torch.tensor([-1.0]), torch.tensor(0.0),
                                 reinforce_weight=0.1, entropy_weight=0.5)
    h = torch.distributions.Categorical(probs=alphas[0, :2].detach()).entropy()  # (2,) real steps
    assert float(terms.entropy) == pytest.approx(float(h.mean()), abs=1e-6)
    assert float(terms.surrogate) == pytest.approx(-0.5 * float(h.mean()), abs=1e-6)
    assert terms.sampled.tolist() == [True]
    terms.surrogate.backward()
    assert torch.all(alphas.grad[0, 2] == 0)  # padding: no term at all
    # Step 1 read the expectation: its only gradient is the entropy's, zero at the uniform alpha
    # up to a constant that the softmax removes.
    assert torch.allclose(alphas.grad[0, 1], alphas.grad[0, 1].mean().expand(4), atol=1e-7)
    # Descending the surrogate (no REINFORCE) through a softmax raises a peaked map's entropy.
    logits = torch.tensor([[[2.0, 0.5, 0.0, -1.0]]], requires_grad=True)  # (B, T, P)
    before = torch.distributions.Categorical(logits=logits.detach()).entropy()
    terms = hard_attention_terms(logits.softmax(dim=2), torch.tensor([[0]]), torch.tensor([[True]]),
                                 torch.tensor([-1.0]), torch.tensor(0.0), reinforce_weight=0.0, entropy_weight=1.0)
    terms.surrogate.backward()
    after = torch.distributions.Categorical(logits=(logits - 0.1 * logits.grad).detach()).entropy()
    assert float(after) > float(before) + 1e-3


def test_baseline_moves_only_with_sampled_captions():
    b = torch.tensor(-1.0)
    reward = torch.tensor([-3.0, -5.0, -100.0])
    sampled = torch.tensor([True, True, False])
    assert float(updated_baseline(b, reward, sampled, 0.9)) == pytest.approx(0.9 * -1.0 + 0.1 * -4.0)
    assert float(updated_baseline(b, reward, torch.zeros(3, dtype=torch.bool), 0.9)) == -1.0


# ----------------------------------------------------------------------------- the sampler
def test_sampling_frequencies_follow_alpha():
    """The regions the decoder reads at its first step (where every copy of the image has the
    same alpha) are distributed as alpha; an image reads the expectation with probability
    expectation_p; and the draws are a function of the generator's seed."""
    dec, image = _toy()
    n = 10_000
    feats, caps = image.expand(n, P, E), CAPTION.expand(n, -1)
    with torch.no_grad():
        out = dec(feats, caps, rule=RegionSampler.draw(torch.Generator().manual_seed(1), n, 0.3))
    alpha = out.alphas[0, 0]  # (P,)
    assert float(alpha.max() - alpha.min()) > 0.2  # far from uniform, or the check proves little
    first = out.regions[:, 0]
    expected = first == EXPECTED
    assert float(expected.float().mean()) == pytest.approx(0.3, abs=4 * (0.3 * 0.7 / n) ** 0.5)
    assert bool((out.regions == EXPECTED).eq(expected.unsqueeze(1)).all())  # the whole caption
    counts = torch.bincount(first[~expected], minlength=P).double()
    m = counts.sum()
    tolerance = 4 * (alpha.double() * (1 - alpha.double()) / m).sqrt()
    assert torch.all((counts / m - alpha.double()).abs() < tolerance), (counts / m, alpha)
    chi2 = float(((counts - m * alpha.double()) ** 2 / (m * alpha.double())).sum())
    assert chi2 < 16.3  # chi-square, 3 degrees of freedom, p = 0.001
    with torch.no_grad():
        again = dec(feats, caps, rule=RegionSampler.draw(torch.Generator().manual_seed(1), n, 0.3))
        other = dec(feats, caps, rule=RegionSampler.draw(torch.Generator().manual_seed(2), n, 0.3))
    assert torch.equal(again.regions, out.regions) and not torch.equal(other.regions, out.regions)


def test_a_region_of_zero_probability_is_never_sampled():
    alpha = torch.tensor([[0.5, 0.0, 0.5, 0.0]]).expand(5000, 4)
    focus = RegionSampler(torch.Generator().manual_seed(0), torch.zeros(5000, dtype=torch.bool))(alpha)
    assert set(focus.region.tolist()) == {0, 2}


def test_read_context_is_the_region_or_the_expectation():
    feats = torch.randn(2, P, E)  # two images, K = 2 rows each
    alpha = torch.softmax(torch.randn(4, P), dim=1)
    regions = torch.tensor([3, EXPECTED, 0, 2])
    ctx = read_context(feats, alpha, fixed_focus(regions)(alpha))
    assert torch.equal(ctx[0], feats[0, 3]) and torch.equal(ctx[2], feats[1, 0]) and torch.equal(ctx[3], feats[1, 2])
    assert torch.allclose(ctx[1], alpha[1] @ feats[0], atol=1e-6)
    maps = region_map(alpha, regions)
    assert torch.equal(maps[0], torch.tensor([0.0, 0.0, 0.0, 1.0])) and torch.equal(maps[1], alpha[1])


# ----------------------------------------------------------------------------- teacher forcing and step()
def test_teacher_forcing_with_a_fixed_sample_equals_step():
    torch.manual_seed(0)
    dec = tiny_decoder(attention="hard", dropout=0.3).eval()
    feats = torch.randn(3, 16, 8) * 2
    caps = torch.tensor([[1, 5, 6, 2, 0, 0], [1, 7, 8, 9, 10, 2], [1, 4, 2, 0, 0, 0]])
    sampled = dec(feats, caps, rule=RegionSampler.draw(torch.Generator().manual_seed(0), 3, 0.5))
    regions = sampled.regions  # (B, T), some rows EXPECTED
    assert bool((regions == EXPECTED).any()) and bool((regions >= 0).any())
    replay = dec(feats, caps, regions=regions)
    assert torch.equal(replay.logits, sampled.logits) and torch.equal(replay.regions, regions)
    keys, state = dec.prepare(feats), dec.init_state(feats)
    for t in range(caps.size(1) - 1):
        out = dec.step(caps[:, t], state, feats, keys, rule=fixed_focus(regions[:, t]))
        state = out.state
        assert torch.allclose(out.logits, replay.logits[:, t], atol=1e-6)
        assert torch.allclose(out.alpha, replay.alphas[:, t], atol=1e-6)
        assert torch.equal(out.region, regions[:, t])
    # The regions read matter: reading others (here the expectation everywhere) changes the words.
    expectation = dec(feats, caps, regions=torch.full_like(regions, EXPECTED))
    assert not torch.allclose(expectation.logits, replay.logits, atol=1e-3)


def test_decoding_reads_the_argmax_region_or_the_expectation():
    """Greedy and beam search are deterministic: argmax (default) maps are one-hot at alpha's
    argmax; beam 1 equals greedy; "expectation" decodes exactly as the soft model with the same
    weights does."""
    torch.manual_seed(0)
    hard = tiny_decoder(attention="hard").eval()
    feats = torch.randn(4, 16, 8) * 2
    kw = dict(start_id=START, end_id=END, pad_id=PAD, max_len=8)
    greedy = greedy_search(hard, feats, **kw)
    assert greedy_search(hard, feats, **kw)[0].tokens == greedy[0].tokens
    beam = beam_search(hard, feats, beam_size=1, **kw)
    for g, (b,) in zip(greedy, beam):
        assert g.tokens == b.tokens and torch.equal(g.alphas, b.alphas)
        assert torch.equal(g.alphas.sum(dim=1), torch.ones(len(g.tokens)))
        assert set(g.alphas.flatten().tolist()) <= {0.0, 1.0}  # one-hot: the region read
    # The one-hot is at alpha's argmax: replay the greedy words with teacher forcing.
    caps = torch.tensor([[START, *greedy[0].tokens]])
    forced = hard(feats[:1], caps)
    assert torch.equal(forced.regions[0], forced.alphas[0].argmax(dim=1))
    assert torch.equal(greedy[0].alphas.argmax(dim=1), forced.regions[0])
    soft = tiny_decoder(attention="soft").eval()
    soft.load_state_dict(hard.state_dict())
    as_soft = greedy_search(soft, feats, **kw)
    as_expectation = greedy_search(hard, feats, hard_decode="expectation", **kw)
    for s, x in zip(as_soft, as_expectation):
        assert s.tokens == x.tokens and s.score == pytest.approx(x.score, abs=1e-6)
        assert torch.allclose(s.alphas, x.alphas, atol=1e-6)
    assert [h.tokens for h in as_soft] != [h.tokens for h in greedy]  # the two rules differ here
    with pytest.raises(ValueError, match="hard_decode"):
        greedy_search(hard, feats, hard_decode="sample", **kw)


# ----------------------------------------------------------------------------- training
def _hard_parts(**train):
    from captioner.checkpoint import new_model
    from captioner.data.datasets import CaptionBatch
    from captioner.features.encoder import encoder_dim
    from captioner.train.optim import make_optimization, param_groups

    mcfg = ModelConfig(image_size=128, grid=4, embed_dim=16, attention_dim=16, hidden_dim=32, dropout=0.0,
                       pretrained="none", attention="hard")
    tcfg = TrainConfig(**{"decoder_lr": 1e-2, **train})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = new_model(mcfg, 12, load_weights=False)
        feats = torch.randn(3, 16, encoder_dim(mcfg))
    opt = make_optimization(model.decoder, param_groups(model, tcfg), tcfg, torch.device("cpu"),
                            hard_attention=True)
    captions = torch.tensor([[1, 5, 6, 2, 0, 0], [1, 7, 8, 9, 10, 2], [1, 4, 2, 0, 0, 0]])  # (B, T+1)
    mask = captions != PAD
    batch = CaptionBatch(feats, captions, mask.sum(1), mask, torch.arange(3), [])
    return model, opt, tcfg, batch, Config(model=mcfg, train=tcfg)


def test_tiny_hard_model_overfits_one_batch():
    from captioner.train.loop import train_step

    model, opt, cfg, batch, _ = _hard_parts()
    steps = [train_step(opt, batch, config=cfg) for _ in range(100)]
    first, last = float(steps[0].ce), float(steps[-1].ce)
    assert last < 0.02 * first, (first, last)
    # b starts at 0, falls to the first rewards (about -log V per word), then rises with them.
    baselines = [float(s.hard.baseline) for s in steps]
    assert min(baselines) < -0.5 and -0.2 < baselines[-1] < 0
    hyps = greedy_search(model.decoder.eval(), batch.images, start_id=START, end_id=END, pad_id=PAD, max_len=8)
    assert [h.tokens for h in hyps] == [[5, 6], [7, 8, 9, 10], [4]]


def test_train_step_adds_reinforce_to_the_loss_gradient():
    """The step's gradient differs from the cross-entropy's by the REINFORCE and entropy
    terms; with their weights at 0 and every image reading the expectation, hard attention
    trains exactly as the soft model with the same weights."""
    from captioner.train.loop import train_step
    from captioner.train.optim import make_optimization, param_groups

    model, opt, cfg, batch, _ = _hard_parts(hard_reinforce_weight=0.0, hard_entropy_weight=0.0,
                                            hard_expectation_p=1.0, grad_clip=0.0)
    soft = type(model)(config=ModelConfig(**{**model.config.__dict__, "attention": "soft"}), vocab_size=12)
    soft.load_state_dict(model.state_dict())
    soft_opt = make_optimization(soft.decoder, param_groups(soft, cfg), cfg, torch.device("cpu"))
    a, b = train_step(opt, batch, config=cfg), train_step(soft_opt, batch, config=cfg)
    assert torch.allclose(a.loss, b.loss, atol=1e-6)
    for p, q in zip(model.decoder.parameters(), soft.decoder.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    model, opt, cfg, batch, _ = _hard_parts(hard_expectation_p=0.0, grad_clip=0.0)
    out = train_step(opt, batch, config=cfg)
    assert float(out.loss) == pytest.approx(float(out.ce + out.att - cfg.hard_entropy_weight * out.hard.entropy),
                                            abs=1e-6)


def _saved_hard_run(tmp_path):
    """A tiny hard model after two steps, and its last.pt as `torch.load(weights_only=True)` reads it."""
    from captioner.train.loop import train_step
    from captioner.train.resume import TrainState, save_training_checkpoint
    from captioner.words.vocab import SPECIALS, Vocab

    vocab = Vocab([*SPECIALS, *(f"w{i}" for i in range(12 - len(SPECIALS)))])
    model, opt, cfg, batch, config = _hard_parts()
    for _ in range(2):
        train_step(opt, batch, config=cfg)
    path = save_training_checkpoint(tmp_path / "last.pt", model=model, config=config, vocab=vocab, opt=opt,
                                    state=TrainState(step=2))
    return torch.load(path, weights_only=True), opt, cfg, model, batch, path


def _restored(ckpt, cfg, **kw):
    from captioner.train.optim import make_optimization, param_groups
    from captioner.train.resume import resumed_model, restore

    m = resumed_model(ckpt, "last.pt")
    o = make_optimization(m.decoder, param_groups(m, cfg), cfg, torch.device("cpu"), hard_attention=True)
    said: list[str] = []
    restore(ckpt, o, say=said.append, **kw)
    return o, said, torch.get_rng_state()


def test_resume_restores_the_baseline_and_the_sampler(tmp_path):
    """Two steps, last.pt, two more steps; a fresh run restored from last.pt takes the same two
    steps: the same weights and the same baseline. Without the restored state it does not."""
    from captioner.train.loop import train_step
    from captioner.train.resume import restore, resumed_model
    from captioner.train.optim import make_optimization, param_groups

    ckpt, opt, cfg, model, batch, path = _saved_hard_run(tmp_path)
    after = [train_step(opt, batch, config=cfg) for _ in range(2)]
    assert ckpt["config"]["model"]["attention"] == "hard"
    assert float(ckpt["hard_attention"]["baseline"]) != 0.0

    def resumed(restore_state: bool):
        m = resumed_model(ckpt, str(path))
        o = make_optimization(m.decoder, param_groups(m, cfg), cfg, torch.device("cpu"), hard_attention=True)
        if restore_state:
            restore(ckpt, o)
        else:
            o.optimizer.load_state_dict(ckpt["optimizer"])
        return m, o, [train_step(o, batch, config=cfg) for _ in range(2)]

    m, o, again = resumed(True)
    assert float(o.hard.baseline) == float(opt.hard.baseline)
    assert torch.equal(o.hard.generator.get_state(), opt.hard.generator.get_state())
    for x, y in zip(after, again):
        assert torch.equal(x.loss, y.loss) and torch.equal(x.hard.baseline, y.hard.baseline)
    for p, q in zip(model.decoder.parameters(), m.decoder.parameters()):
        assert torch.equal(p, q)
    _, o, fresh = resumed(False)
    assert float(o.hard.baseline) != float(opt.hard.baseline)
    assert not torch.equal(fresh[-1].loss, after[-1].loss)
    from captioner.checkpoint import CheckpointError

    del ckpt["hard_attention"]
    with pytest.raises(CheckpointError, match="hard_attention"):
        resumed(True)


def test_a_sampler_saved_on_another_device_type_is_reseeded_and_the_run_goes_on(tmp_path):
    """A GPU run's sampler state (a 16-byte Philox state) cannot go into a CPU generator: the
    run resumes with the baseline, a generator seeded from (seed, rank, step), and says so."""
    ckpt, opt, cfg, *_ = _saved_hard_run(tmp_path)
    ckpt["hard_attention"]["generator"] = torch.zeros(16, dtype=torch.uint8)  # what a CUDA generator saves
    o, said, _ = _restored(ckpt, cfg)
    assert float(o.hard.baseline) == float(opt.hard.baseline) != 0.0
    assert any("another device type" in line and "not bit-exactly" in line for line in said)
    from captioner.train.optim import HardAttentionState
    from captioner.train.resume import _rank_seed

    expected = HardAttentionState.seeded(_rank_seed(ckpt, 0), torch.device("cpu")).generator.get_state()
    assert torch.equal(o.hard.generator.get_state(), expected)  # reseeded from (seed, rank, step) ...
    fresh_run = HardAttentionState.seeded(cfg.seed, torch.device("cpu")).generator.get_state()
    assert not torch.equal(expected, fresh_run)  # ... not left at a new run's seed
    ckpt["hard_attention"]["generator"] = torch.zeros(5056, dtype=torch.uint8)  # the right size, but corrupt
    with pytest.raises(RuntimeError):
        _restored(ckpt, cfg)
    # and a state that fits is taken as it is, silently
    ckpt, opt, cfg, *_ = _saved_hard_run(tmp_path)
    o, said, _ = _restored(ckpt, cfg)
    assert said == [] and torch.equal(o.hard.generator.get_state(), opt.hard.generator.get_state())


def test_ranks_beyond_those_saved_draw_streams_of_their_own(tmp_path):
    """A one-process hard run resumed on two: rank 0 continues from the saved states; rank 1
    gets its own sampler and dropout streams (not a replay of rank 0's), the same every time."""
    ckpt, opt, cfg, *_ = _saved_hard_run(tmp_path)
    o0, said0, rng0 = _restored(ckpt, cfg, rank=0, world=2)
    o1, said1, rng1 = _restored(ckpt, cfg, rank=1, world=2)
    assert torch.equal(o0.hard.generator.get_state(), opt.hard.generator.get_state())
    assert torch.equal(rng0, ckpt["rng"]["torch"])
    assert not torch.equal(o1.hard.generator.get_state(), o0.hard.generator.get_state())
    assert not torch.equal(rng1, rng0)
    assert float(o1.hard.baseline) == float(o0.hard.baseline)
    o1b, _, rng1b = _restored(ckpt, cfg, rank=1, world=2)
    assert torch.equal(o1b.hard.generator.get_state(), o1.hard.generator.get_state()) and torch.equal(rng1b, rng1)
    assert any("resharded" in line for line in said0) and said0 == said1


def test_a_distributed_checkpoint_resumed_on_more_or_fewer_ranks(tmp_path):
    """rank_states of two ranks: at world 3, ranks 0 and 1 keep their own states and rank 2 gets
    a new stream; at world 1, rank 0 keeps its own."""
    ckpt, opt, cfg, *_ = _saved_hard_run(tmp_path)
    other = {"rng": {**ckpt["rng"], "torch": torch.Generator().manual_seed(123).get_state()},
             "hard_attention": {"baseline": torch.tensor(-0.25),
                                "generator": torch.Generator().manual_seed(456).get_state()}}
    ckpt["rank_states"] = [{"rng": ckpt["rng"], "hard_attention": ckpt["hard_attention"]}, other]
    got = {r: _restored(ckpt, cfg, rank=r, world=3) for r in range(3)}
    assert torch.equal(got[0][2], ckpt["rng"]["torch"]) and torch.equal(got[1][2], other["rng"]["torch"])
    assert float(got[1][0].hard.baseline) == -0.25
    assert torch.equal(got[1][0].hard.generator.get_state(), other["hard_attention"]["generator"])
    states = [got[r][0].hard.generator.get_state() for r in range(3)]
    assert not torch.equal(states[2], states[0]) and not torch.equal(states[2], states[1])
    assert not torch.equal(got[2][2], got[0][2]) and not torch.equal(got[2][2], got[1][2])
    assert any("2 ranks'" in line for line in got[0][1])
    alone, said, rng = _restored(ckpt, cfg, rank=0, world=1)
    assert torch.equal(rng, ckpt["rng"]["torch"]) and any("on 1 process from" in line for line in said)


@pytest.mark.slow  # tiny training runs, about 10 s each
def test_training_a_hard_model_resumes_exactly(tmp_path):
    """`train` with model.attention=hard logs the reward, baseline and entropy, and a run resumed
    after epoch 1 ends with the weights and baseline of a run never interrupted."""
    from captioner.checkpoint import load_checkpoint
    from captioner.data.scenes import generate_scenes
    from captioner.train.loop import train

    generate_scenes(tmp_path / "scenes", 24, seed=5, size=64)
    sets = [f"data.data={json.dumps(str(tmp_path / 'scenes' / 'dataset.json'))}", "model.image_size=64",
            "model.grid=2", "model.embed_dim=16", "model.attention_dim=16", "model.hidden_dim=32",
            "data.min_word_freq=1", "train.log_every=1", "train.val_beam_size=2", "train.val_max_len=8",
            "train.batch_size=8", "model.attention=hard"]
    # Builds the feature cache first: a run that builds it does not train bit for bit as one that reads it.
    train(load_config(None, [*sets, "train.epochs=0"]), tmp_path / "warm")
    train(load_config(None, [*sets, "train.epochs=1"]), tmp_path / "resumed")
    first = json.loads((tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()[0])
    assert {"reward", "baseline", "entropy"} <= set(first) and first["baseline"] == pytest.approx(0.1 * first["reward"])
    train(load_config(None, [*sets, "train.epochs=2"]), tmp_path / "resumed", resume=True)
    train(load_config(None, [*sets, "train.epochs=2"]), tmp_path / "clean")
    resumed, clean = (load_checkpoint(tmp_path / run / "last.pt") for run in ("resumed", "clean"))
    assert resumed["step"] == clean["step"] == 24  # 95 captions of the 19 training images, batches of 8
    assert torch.equal(resumed["hard_attention"]["baseline"], clean["hard_attention"]["baseline"])
    assert torch.equal(resumed["hard_attention"]["generator"], clean["hard_attention"]["generator"])
    for k, v in clean["model"].items():
        assert torch.equal(resumed["model"][k], v), k


# ----------------------------------------------------------------------------- checkpoints and captioning
@pytest.fixture(scope="module")
def scene_images(tmp_path_factory) -> list[Path]:
    return sorted((REPO / "data" / "examples").glob("scene_*.png"))[:2]


@pytest.mark.parametrize("attention", ["soft", "hard"])
def test_checkpoint_records_the_mechanism_and_captions(tmp_path, scene_images, attention):
    from captioner.api import load_captioner
    from captioner.checkpoint import load_model

    path = make_tiny_checkpoint(tmp_path / f"{attention}.pt", seed=3, grid=2, attention=attention)
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["model"]["attention"] == attention
    assert load_model(path).model.decoder.hard == (attention == "hard")
    cap = load_captioner(path, device="cpu", engine="torch")
    for c in cap.caption(scene_images, beam_size=2, max_len=4):
        assert len(c.tokens) == 4 and c.alphas.shape == (4, 2, 2)
        np.testing.assert_allclose(c.alphas.sum(axis=(1, 2)), 1.0, atol=1e-5)
        assert (set(np.unique(c.alphas)) <= {0.0, 1.0}) == (attention == "hard")
    for c in cap.caption(scene_images, beam_size=2, max_len=4, hard_decode="expectation"):
        assert not set(np.unique(c.alphas)) <= {0.0, 1.0}  # alpha itself, for both mechanisms


def test_hard_checkpoint_through_the_cli_with_overlays(tmp_path, scene_images, capsys):
    """`captioner caption --json` gives one-hot maps for a hard checkpoint, and its overlay lights
    exactly the cell that was read."""
    from PIL import Image

    from captioner.cli import main
    from captioner.overlay.render import upsample

    path = make_tiny_checkpoint(tmp_path / "hard.pt", seed=3, grid=2, attention="hard")
    out_dir = tmp_path / "overlays"
    code = main(["caption", *map(str, scene_images), "--checkpoint", str(path), "--json", "--max-len", "4",
                 "--device", "cpu", "--overlay-dir", str(out_dir)])
    out = capsys.readouterr().out.splitlines()
    assert code == 0 and len(out) == len(scene_images)
    for line in out:
        alphas = np.asarray(json.loads(line)["alphas"])  # (T, G, G)
        assert alphas.shape == (4, 2, 2) and set(np.unique(alphas)) <= {0.0, 1.0}
        for a in alphas:
            cells = upsample(a, (8, 8), mode="nearest")
            r, c = np.unravel_index(a.argmax(), a.shape)
            assert np.all(cells[4 * r:4 * r + 4, 4 * c:4 * c + 4] == 1.0) and cells.sum() == 16.0
    for image in scene_images:
        with Image.open(out_dir / f"{image.stem}.png") as png:
            assert png.format == "PNG"
    # --hard-decode expectation: the maps are alpha itself, not one-hot.
    code = main(["caption", *map(str, scene_images), "--checkpoint", str(path), "--json", "--max-len", "4",
                 "--device", "cpu", "--hard-decode", "expectation"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and any(not set(np.unique(json.loads(line)["alphas"])) <= {0.0, 1.0} for line in lines)


@pytest.mark.parametrize("command", ["caption", "evaluate", "serve"])
def test_the_cli_offers_every_decode_rule(command):
    import argparse

    from captioner.cli import build_parser
    from captioner.config import HARD_DECODE_RULES
    from captioner.model.hard_attention import DECODE_RULES

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    [action] = [a for a in sub._actions if a.dest == "hard_decode"]
    assert tuple(action.choices) == tuple(DECODE_RULES) == HARD_DECODE_RULES


@pytest.mark.slow  # two tiny training runs
def test_validation_decodes_with_train_val_hard_decode(tmp_path, monkeypatch):
    """train.val_hard_decode is the rule validation decodes with (it picks best.pt); a name
    that is no rule is a config error naming the field."""
    from captioner.data.scenes import generate_scenes
    from captioner.train import loop

    with pytest.raises(ConfigError, match="train.val_hard_decode: 'sample'"):
        load_config(None, ["train.val_hard_decode=sample"])
    generate_scenes(tmp_path / "scenes", 12, seed=5, size=64)
    seen = []
    real = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", lambda **kw: seen.append(kw["options"].hard_decode) or real(**kw))
    sets = [f"data.data={json.dumps(str(tmp_path / 'scenes' / 'dataset.json'))}", "model.image_size=64",
            "model.grid=2", "model.embed_dim=8", "model.attention_dim=8", "model.hidden_dim=16",
            "data.min_word_freq=1", "train.val_beam_size=1", "train.val_max_len=4", "train.batch_size=16",
            "model.attention=hard", "train.epochs=1"]
    for rule in ("expectation", "argmax"):
        loop.train(load_config(None, [*sets, f"train.val_hard_decode={rule}"]), tmp_path / rule, log=lambda _m: None)
    assert seen == ["expectation", "argmax"]


def test_evaluate_decodes_with_the_rule_it_is_given(tmp_path, capsys):
    """`captioner evaluate --hard-decode`: each rule's results file holds the captions that
    `caption_iter` gives with that rule, so the ablation can score both rules of one model."""
    from captioner.api import load_captioner
    from captioner.cli import main
    from captioner.data.scenes import generate_scenes

    generate_scenes(tmp_path / "scenes", 6, seed=2, size=64, novel=True)  # all "test"
    path = make_tiny_checkpoint(tmp_path / "hard.pt", seed=3, grid=2, attention="hard")
    cap = load_captioner(path, device="cpu", engine="torch")
    data = tmp_path / "scenes" / "dataset.json"
    records = json.loads(data.read_text())["images"]
    images = [tmp_path / "scenes" / "images" / r["filename"] for r in records if r["split"] == "test"]
    for rule in ("argmax", "expectation"):
        results = tmp_path / f"{rule}.json"
        code = main(["evaluate", "--data", str(data), "--checkpoint", str(path), "--max-len", "6",
                     "--device", "cpu", "--engine", "torch", "--no-java", "--quiet",
                     "--hard-decode", rule, "--results", str(results)])
        assert code == 0 and "CIDEr-D" in json.loads(capsys.readouterr().out.splitlines()[-1])
        expected = [r.caption.text for r in cap.caption_iter(images, max_len=6, hard_decode=rule)]
        assert [r["caption"] for r in json.loads(results.read_text())] == expected
    assert json.loads((tmp_path / "argmax.json").read_text()) != json.loads((tmp_path / "expectation.json").read_text())


def test_old_checkpoints_are_soft():
    from captioner.checkpoint import load_checkpoint

    ckpt = load_checkpoint(REPO / "tests" / "fixtures" / "v0_1_last.pt")
    assert "attention" not in ckpt["config"]["model"]
    assert config_from_dict(ckpt["config"]).model.attention == "soft"


# ----------------------------------------------------------------------------- config
@pytest.mark.parametrize("overrides, message", [
    (["model.attention=medium"], r"model.attention: 'medium' is not one of \('soft', 'hard'\)"),
    (["model.attention=hard", "model.scorer=none"], "'hard' needs a learned scorer"),
    (["train.hard_expectation_p=1.5"], r"train.hard_expectation_p: must be in \[0, 1\]"),
    (["train.hard_baseline_decay=1.0"], r"train.hard_baseline_decay: must be in \[0, 1\)"),
    (["train.hard_reinforce_weight=-0.1"], "train.hard_reinforce_weight: must be >= 0"),
    (["train.hard_entropy_weight=-1"], "train.hard_entropy_weight: must be >= 0"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_config_defaults_are_soft_and_the_papers_values():
    cfg = load_config(None, ["model.attention=hard"])
    assert cfg.model.attention == "hard" and load_config().model.attention == "soft"
    t = cfg.train
    assert (t.hard_reinforce_weight, t.hard_entropy_weight, t.hard_baseline_decay, t.hard_expectation_p) == (
        1.0, 0.002, 0.9, 0.5)


def test_expected_focus_reads_alpha_everywhere():
    alpha = torch.softmax(torch.randn(3, P), dim=1)
    focus = expected_focus(alpha)
    assert bool(focus.expected.all()) and torch.equal(region_map(alpha, focus.regions()), alpha)
