"""The decoder step, teacher forcing, greedy and beam search, and the losses."""
import pytest
import torch

from captioner.config import SCORERS
from captioner.scoring.losses import doubly_stochastic_penalty, masked_cross_entropy
from captioner.words.search import beam_search, greedy_search
from conftest import tiny_decoder

START, END, PAD = 1, 2, 0


def _captions():
    # (B, T+1): <start> words <end> <pad>...; different lengths, unsorted.
    return torch.tensor([[1, 5, 6, 2, 0, 0], [1, 7, 8, 9, 10, 2], [1, 4, 2, 0, 0, 0]])


def test_forward_shapes():
    dec = tiny_decoder()
    out = dec(torch.randn(3, 16, 8), _captions())
    assert out.logits.shape == (3, 5, 12) and out.alphas.shape == (3, 5, 16)
    assert torch.allclose(out.alphas.sum(-1), torch.ones(3, 5), atol=1e-6)


@pytest.mark.parametrize("scorer", SCORERS)
def test_step_agrees_with_teacher_forcing(scorer):
    dec = tiny_decoder(scorer, dropout=0.3).eval()
    feats, caps = torch.randn(3, 16, 8), _captions()
    forced = dec(feats, caps)
    keys, state = dec.prepare(feats), dec.init_state(feats)
    for t in range(caps.size(1) - 1):
        out = dec.step(caps[:, t], state, feats, keys)
        state = out.state
        assert torch.allclose(out.logits, forced.logits[:, t], atol=1e-6)
        assert torch.allclose(out.alpha, forced.alphas[:, t], atol=1e-6)


def test_batch_does_not_change_per_item_results():
    """No sorting, no cross-talk: each caption's logits are the same alone or in a batch."""
    dec = tiny_decoder().eval()
    feats, caps = torch.randn(3, 16, 8), _captions()
    batched = dec(feats, caps).logits
    for b in range(3):
        alone = dec(feats[b:b + 1], caps[b:b + 1]).logits
        assert torch.allclose(alone[0], batched[b], atol=1e-5)


@pytest.mark.parametrize("scorer", ["additive", "general", "none"])
def test_beam_one_equals_greedy(scorer):
    dec = tiny_decoder(scorer, vocab_size=12).eval()
    feats = torch.randn(5, 16, 8)
    greedy = greedy_search(dec, feats, start_id=START, end_id=END, pad_id=PAD, max_len=12)
    beam = beam_search(dec, feats, start_id=START, end_id=END, pad_id=PAD, beam_size=1, max_len=12)
    for g, (b,) in zip(greedy, beam):
        assert g.tokens == b.tokens
        assert g.score == pytest.approx(b.score, abs=1e-6)
        assert torch.equal(g.alphas, b.alphas)


def test_batched_beam_equals_one_at_a_time():
    dec = tiny_decoder(vocab_size=12).eval()
    feats = torch.randn(4, 16, 8)
    batched = beam_search(dec, feats, start_id=START, end_id=END, pad_id=PAD, beam_size=4,
                          max_len=10, n_best=3)
    for b in range(4):
        alone = beam_search(dec, feats[b:b + 1], start_id=START, end_id=END, pad_id=PAD,
                            beam_size=4, max_len=10, n_best=3)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[b]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in batched[b]], abs=1e-5)
        for x, y in zip(alone, batched[b]):
            assert torch.allclose(x.alphas, y.alphas, atol=1e-5)


def test_beam_results_are_consistent():
    dec = tiny_decoder(vocab_size=12).eval()
    feats = torch.randn(2, 16, 8)
    hyps = beam_search(dec, feats, start_id=START, end_id=END, pad_id=PAD, beam_size=5,
                       max_len=8, n_best=5)
    for per_image in hyps:
        scores = [h.score for h in per_image]
        assert scores == sorted(scores, reverse=True)
        for h in per_image:
            assert not {END, PAD, START} & set(h.tokens)
            assert h.alphas.shape == (len(h.tokens), 16)
            assert torch.allclose(h.alphas.sum(1), torch.ones(len(h.tokens)), atol=1e-5)
            # The score is the model's log-probability of exactly these tokens.
            caps = torch.tensor([[START, *h.tokens] + ([END] if len(h.tokens) < 8 else [])])
            with torch.no_grad():
                logits = dec(feats[hyps.index(per_image):hyps.index(per_image) + 1], caps).logits
            targets = caps[0, 1:]
            logp = logits[0].log_softmax(-1).gather(1, targets.unsqueeze(1)).sum()
            assert float(logp) == pytest.approx(h.score, abs=1e-4)
    # A wider beam never finds a worse best hypothesis than greedy under raw scores.
    greedy = greedy_search(dec, feats, start_id=START, end_id=END, pad_id=PAD, max_len=8)
    assert all(b[0].score >= g.score - 1e-6 for b, g in zip(hyps, greedy))


def test_length_penalty_and_n_best_validation():
    dec = tiny_decoder().eval()
    feats = torch.randn(1, 16, 8)
    with pytest.raises(ValueError, match="n_best"):
        beam_search(dec, feats, start_id=START, end_id=END, pad_id=PAD, beam_size=2, n_best=3)
    out = beam_search(dec, feats, start_id=START, end_id=END, pad_id=PAD, beam_size=3,
                      max_len=8, length_penalty=1.0, n_best=3)[0]
    norm = [h.score / (len(h.tokens) + (1 if len(h.tokens) < 8 else 0)) for h in out]
    assert norm == sorted(norm, reverse=True)


def test_masked_cross_entropy_ignores_padding():
    logits = torch.randn(2, 4, 6)
    targets = torch.tensor([[3, 4, 2, 0], [5, 2, 0, 0]])
    mask = targets != 0
    loss = masked_cross_entropy(logits, targets, mask)
    manual = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    assert torch.allclose(loss, manual, atol=1e-6)
    # Changing logits on padded positions does not change the loss.
    logits2 = logits.clone()
    logits2[~mask] += 100.0
    assert torch.allclose(masked_cross_entropy(logits2, targets, mask), loss)


def test_doubly_stochastic_penalty():
    alphas = torch.full((1, 4, 4), 0.25)  # (B, T, P): 4 steps of uniform attention
    mask = torch.ones(1, 4, dtype=torch.bool)
    # Each region receives 4 * 0.25 = 1 in total: no penalty.
    assert float(doubly_stochastic_penalty(alphas, mask, 1.0)) == pytest.approx(0.0)
    mask[0, 2:] = False  # only 2 real steps: coverage 0.5 per region
    assert float(doubly_stochastic_penalty(alphas, mask, 2.0)) == pytest.approx(2.0 * 0.25)
    assert float(doubly_stochastic_penalty(alphas, mask, 0.0)) == 0.0


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    dec = tiny_decoder(vocab_size=12)
    dec = type(dec)(vocab_size=12, encoder_dim=8, embed_dim=16, attention_dim=16, hidden_dim=32,
                    dropout=0.0, scorer="additive")
    feats, caps = torch.randn(3, 16, 8), _captions()
    targets, mask = caps[:, 1:], caps[:, 1:] != PAD
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        out = dec(feats, caps)
        loss = masked_cross_entropy(out.logits, targets, mask) + doubly_stochastic_penalty(out.alphas, mask, 0.1)
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = float(masked_cross_entropy(dec(feats, caps).logits, targets, mask))
    assert final < 0.1 * first
    # And it now decodes its training captions.
    hyps = greedy_search(dec.eval(), feats, start_id=START, end_id=END, pad_id=PAD, max_len=8)
    assert [h.tokens for h in hyps] == [[5, 6], [7, 8, 9, 10], [4]]


def test_min_len_forbids_an_empty_caption():
    dec = tiny_decoder().eval()
    with torch.no_grad():
        dec.L_o.bias[END] = 50.0  # <end> is by far the most likely first token
    feats = torch.randn(2, 16, 8)
    for min_len in (1, 3):
        greedy = greedy_search(dec, feats, start_id=START, end_id=END, pad_id=PAD, max_len=8, min_len=min_len)
        beam = beam_search(dec, feats, start_id=START, end_id=END, pad_id=PAD, beam_size=3, max_len=8,
                           min_len=min_len)
        assert [len(h.tokens) for h in greedy] == [min_len, min_len]
        assert [len(b[0].tokens) for b in beam] == [min_len, min_len]
    assert greedy_search(dec, feats, start_id=START, end_id=END, pad_id=PAD, max_len=8, min_len=0)[0].tokens == []


@pytest.mark.parametrize("leave_when", [1, 4, 8])
def test_images_leave_the_batch_when_their_beams_end(leave_when):
    """Images whose K beams have all ended stop costing decoder rows (once they are 1/leave_when
    of the batch; until then they idle on <pad>), and results equal decoding each image alone."""
    torch.manual_seed(3)
    dec = tiny_decoder(vocab_size=6).eval()
    with torch.no_grad():
        dec.L_o.bias[END] += 0.8  # images end their beams at different steps; some run to max_len
    feats = torch.randn(8, 16, 8) * torch.linspace(0.5, 4, 8).view(8, 1, 1)
    kw = dict(start_id=START, end_id=END, pad_id=PAD, beam_size=3, max_len=15, n_best=3, length_penalty=0.5,
              leave_when=leave_when)
    rows_per_step = []
    step = dec.step

    def counting_step(tokens, *args, **kwargs):
        rows_per_step.append(tokens.size(0))
        return step(tokens, *args, **kwargs)

    dec.step = counting_step
    batched = beam_search(dec, feats, **kw)
    del dec.step
    assert rows_per_step[:2] == [8, 8 * 3]  # the first step once per image, then K beams each
    assert rows_per_step[1:] == sorted(rows_per_step[1:], reverse=True)
    assert len(rows_per_step) == 15  # some images ran to max_len
    if leave_when == 1:  # only once every image has ended, i.e. never before max_len here
        assert set(rows_per_step[1:]) == {8 * 3}
    else:  # images left at two or more different steps
        assert len(set(rows_per_step)) > 2
    for b in range(8):
        alone = beam_search(dec, feats[b:b + 1], **kw)[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[b]]
        assert [h.score for h in alone] == pytest.approx([h.score for h in batched[b]], abs=1e-5)
        for x, y in zip(alone, batched[b]):
            assert torch.allclose(x.alphas, y.alphas, atol=1e-5)


def test_max_len_must_be_positive():
    with pytest.raises(ValueError, match="max_len"):
        beam_search(tiny_decoder().eval(), torch.randn(1, 16, 8), start_id=START, end_id=END, pad_id=PAD, max_len=0)


def _reference_beam(dec, feats, *, beam_size, max_len, min_len=1, length_penalty=0.0, n_best=1):
    """Beam search for one image written the slow, obvious way: a Python list of hypotheses,
    each stepped on its own, finished ones competing with live candidates for the K slots."""
    keys, state = dec.prepare(feats), dec.init_state(feats)
    beams = [([], 0.0, state, [], False)]  # tokens, score, state, alphas, finished
    for t in range(max_len):
        cands = []
        for toks, score, st, alps, fin in beams:
            if fin:
                cands.append((toks, score, st, alps, True))
                continue
            with torch.no_grad():
                out = dec.step(torch.tensor([toks[-1] if toks else START]), st, feats, keys)
            logp = out.logits[0].log_softmax(0)
            for w in range(logp.numel()):
                if w in (START, PAD) or (w == END and t < min_len):
                    continue
                cands.append((toks + [w], score + float(logp[w]), out.state, alps + [out.alpha[0]], w == END))
        beams = sorted(cands, key=lambda c: -c[1])[:beam_size]
        if all(b[4] for b in beams):
            break
    def ranked(b):
        return b[1] / len(b[0]) ** length_penalty
    out = []
    for toks, score, _, alps, _ in sorted(beams, key=lambda b: -ranked(b))[:n_best]:
        words = toks[:-1] if toks and toks[-1] == END else toks
        out.append((words, score, torch.stack(alps[:len(words)]) if words else torch.empty(0, 16)))
    return out


@pytest.mark.parametrize("beam_size,length_penalty,vocab_size", [(3, 0.0, 12), (4, 0.7, 12), (8, 0.0, 6)])
def test_beam_search_matches_a_plain_reference(beam_size, length_penalty, vocab_size):
    """The batched search (first step once per image, images settled early, leaving the batch)
    finds exactly the hypotheses of the plain one-hypothesis-at-a-time search; beam 8 over a
    6-word vocabulary exercises the path where the first step cannot fill K slots from one row."""
    torch.manual_seed(5)
    dec = tiny_decoder(vocab_size=vocab_size).eval()
    with torch.no_grad():
        dec.L_o.bias[END] += 1.0
    feats = torch.randn(6, 16, 8) * torch.linspace(0.5, 3, 6).view(6, 1, 1)
    n_best = 2
    got = beam_search(dec, feats, start_id=START, end_id=END, pad_id=PAD, beam_size=beam_size, max_len=9,
                      length_penalty=length_penalty, n_best=n_best)
    for b in range(6):
        want = _reference_beam(dec, feats[b:b + 1], beam_size=beam_size, max_len=9,
                               length_penalty=length_penalty, n_best=n_best)
        assert [h.tokens for h in got[b]] == [w[0] for w in want]
        assert [h.score for h in got[b]] == pytest.approx([w[1] for w in want], abs=1e-5)
        for h, w in zip(got[b], want):
            assert torch.allclose(h.alphas, w[2], atol=1e-5)


def test_settled_images_stop_early_with_the_same_result():
    """With length_penalty 0 an image stops once its n_best best slots have ended above every
    live one: fewer decoder rows, and exactly the hypotheses of running every beam to <end>."""
    torch.manual_seed(4)
    dec = tiny_decoder(vocab_size=12).eval()
    with torch.no_grad():
        dec.L_o.bias[END] += 0.6  # most images settle within 3 steps; one runs to max_len
    feats = torch.randn(8, 16, 8) * torch.linspace(0.5, 4, 8).view(8, 1, 1)
    kw = dict(start_id=START, end_id=END, pad_id=PAD, beam_size=4, max_len=20, n_best=2)
    step = dec.step
    results, rows = {}, {}
    for early in (False, True):
        counted = []
        dec.step = lambda tokens, *a, counted=counted, **k: (counted.append(tokens.size(0)), step(tokens, *a, **k))[1]
        results[early] = beam_search(dec, feats, **kw, settle_early=early)
        rows[early] = sum(counted)
        del dec.step
    assert rows[True] < 0.5 * rows[False]
    for a, b in zip(results[False], results[True]):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == [h.score for h in b]
        assert all(torch.equal(x.alphas, y.alphas) for x, y in zip(a, b))
