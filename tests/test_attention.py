import pytest
import torch

from captioner.model.attention import Attention
from captioner.config import SCORERS


@pytest.mark.parametrize("scorer", SCORERS)
def test_alpha_sums_to_one_and_shapes(scorer):
    att = Attention(scorer=scorer, encoder_dim=8, hidden_dim=7, attention_dim=5)
    feats = torch.randn(3, 16, 8)  # (B, P, E)
    hidden = torch.randn(3, 7)
    context, alpha = att(feats, att.project_keys(feats), hidden)
    assert context.shape == (3, 8) and alpha.shape == (3, 16)
    assert torch.allclose(alpha.sum(dim=1), torch.ones(3), atol=1e-6)
    assert (alpha >= 0).all()
    # The context is the alpha-weighted mean of the regions.
    assert torch.allclose(context, (alpha.unsqueeze(2) * feats).sum(1), atol=1e-5)


def test_none_is_mean_pooling_and_others_depend_on_hidden():
    feats = torch.randn(2, 9, 8)
    none = Attention(scorer="none", encoder_dim=8, hidden_dim=7, attention_dim=5)
    context, alpha = none(feats, none.project_keys(feats), torch.randn(2, 7))
    assert torch.allclose(alpha, torch.full((2, 9), 1 / 9))
    assert torch.allclose(context, feats.mean(1), atol=1e-6)
    for scorer in ("additive", "concat", "dot", "scaled_dot", "general"):
        att = Attention(scorer=scorer, encoder_dim=8, hidden_dim=7, attention_dim=5)
        keys = att.project_keys(feats)
        a1 = att(feats, keys, torch.randn(2, 7)).alpha
        a2 = att(feats, keys, torch.randn(2, 7)).alpha
        assert not torch.allclose(a1, a2), scorer


def test_scaled_dot_is_dot_over_sqrt_dk():
    torch.manual_seed(1)
    dot = Attention(scorer="dot", encoder_dim=8, hidden_dim=7, attention_dim=16)
    scaled = Attention(scorer="scaled_dot", encoder_dim=8, hidden_dim=7, attention_dim=16)
    scaled.load_state_dict(dot.state_dict())
    feats, h = torch.randn(2, 4, 8), torch.randn(2, 7)
    e_dot = dot.scores(feats, dot.project_keys(feats), h)
    e_scaled = scaled.scores(feats, scaled.project_keys(feats), h)
    assert torch.allclose(e_scaled, e_dot / 4.0, atol=1e-6)


def test_unknown_scorer():
    with pytest.raises(ValueError, match="unknown scorer"):
        Attention(scorer="cosine", encoder_dim=8, hidden_dim=7, attention_dim=5)


@pytest.mark.parametrize("scorer", SCORERS)
def test_k_queries_per_image_equal_k_copies_of_the_image(scorer):
    """Beam search's grouped attention (K beams share an image) is the plain one on copies."""
    att = Attention(scorer=scorer, encoder_dim=8, hidden_dim=7, attention_dim=5)
    feats, hidden = torch.randn(2, 9, 8), torch.randn(2 * 3, 7)  # B=2 images, K=3 beams each
    grouped = att(feats, att.project_keys(feats), hidden)
    copies = feats.repeat_interleave(3, dim=0)  # (B*K, P, E)
    plain = att(copies, att.project_keys(copies), hidden)
    assert torch.allclose(grouped.context, plain.context, atol=1e-6)
    assert torch.allclose(grouped.alpha, plain.alpha, atol=1e-6)


@pytest.mark.parametrize("chunk", [1, 500, 1 << 18])
def test_additive_in_slices_without_grad_equals_the_autograd_form(chunk):
    """Decoding computes the additive scores a few images at a time; training in one piece."""
    torch.manual_seed(2)
    # slice_elements 1: one image per slice; 500: 3
    att = Attention(scorer="additive", encoder_dim=8, hidden_dim=7, attention_dim=5, slice_elements=chunk)
    feats, hidden = torch.randn(7, 9, 8), torch.randn(7 * 3, 7)  # B=7, K=3: slices do not divide B
    keys = att.project_keys(feats)
    whole = att.scores(feats, keys, hidden)  # grad enabled: the training path
    assert whole.requires_grad
    with torch.no_grad():
        sliced = att.scores(feats, keys, hidden, sliced=True)
    assert sliced.shape == (7, 3, 9)
    assert torch.allclose(sliced, whole.detach(), atol=1e-6)


def test_concat_is_one_matrix_on_the_concatenation():
    """The split form (keys W_a a_i + b once per image, W_h h per step) is the literal
    w^T tanh(W [h; a_i] + b), in training and in the sliced decoding path."""
    torch.manual_seed(3)
    att = Attention(scorer="concat", encoder_dim=8, hidden_dim=7, attention_dim=5)
    feats, hidden = torch.randn(2, 9, 8), torch.randn(2 * 3, 7)  # B=2, K=3
    joint = torch.cat([hidden.view(2, 3, 1, 7).expand(2, 3, 9, 7), feats.unsqueeze(1).expand(2, 3, 9, 8)], dim=3)
    literal = att.score(torch.tanh(att.concat_proj(joint))).squeeze(3)  # (B, K, P)
    keys = att.project_keys(feats)
    assert keys.shape == (2, 9, 5)
    assert torch.allclose(att.scores(feats, keys, hidden), literal, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(att.scores(feats, keys, hidden, sliced=True), literal, atol=1e-6)
