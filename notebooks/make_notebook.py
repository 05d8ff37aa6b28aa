"""Write notebooks/attention_walkthrough.ipynb from the cells below (outputs stay empty).

    .venv/bin/python notebooks/make_notebook.py

The notebook is generated so that it can be reviewed as plain Python in a diff and so the
committed .ipynb never carries outputs, execution counts or random cell ids: the same script
always writes the same bytes. Edit the cells here, not in Jupyter, then rerun this script.
tests/test_notebook.py executes the result.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(__file__).resolve().parent / "attention_walkthrough.ipynb"

CELLS: list[tuple[str, str, str]] = []  # (id, kind, source)


def md(cell_id: str, source: str) -> None:
    CELLS.append((cell_id, "markdown", source.strip("\n")))


def code(cell_id: str, source: str) -> None:
    CELLS.append((cell_id, "code", source.strip("\n")))


md("intro", r"""
# Soft attention, step by step

*Show, Attend and Tell* (Xu et al., 2015) writes a caption one word at a time. Before each word
the decoder looks at the image through **soft attention** over a $G \times G$ grid of regions.
This notebook opens up those steps on the default model, applied to `data/examples/scene_1.png`:

1. the numbers behind one word: the raw scores $e_i$, the weights $\alpha_i$, the context
   vector and the gate $\beta$;
2. the attention map of every word, drawn over the image;
3. how the choice of scoring function (additive, dot, scaled dot, general) shapes the
   distribution.

It runs on a CPU in seconds. To use your own model instead of the embedded one, set the
environment variable `CAPTIONER_CHECKPOINT` to a checkpoint path before starting Jupyter.

Shapes follow the package's glossary: P regions ($G^2$), E encoder channels, H hidden size,
A attention size, T words.
""")

code("setup", r"""
import math
import os
from pathlib import Path

import numpy as np
import torch
from IPython.display import display

from captioner import load_captioner, load_image
from captioner.model.attention import Attention
from captioner.overlay.options import OverlayOptions
from captioner.overlay.render import panel_grid
from captioner.data.scenes import SHAPES
from captioner.words.search import greedy_search


def find_root(start: Path) -> Path:
    # The notebook may be started from the repository root or from notebooks/.
    for path in (start, *start.parents):
        if (path / "data" / "examples").is_dir():
            return path
    raise FileNotFoundError("start this notebook inside the captioner repository (data/examples not found)")


IMAGE_PATH = find_root(Path.cwd()) / "data" / "examples" / "scene_1.png"
CHECKPOINT = os.environ.get("CAPTIONER_CHECKPOINT") or None  # None: the embedded default model

cap = load_captioner(CHECKPOINT, device="cpu")
model, vocab, G = cap.model, cap.vocab, cap.grid
decoder = model.decoder
attention = decoder.attention
print(f"model: {CHECKPOINT or 'the embedded default model'}")
print(f"grid G = {G}, so P = {G * G} regions; scorer: {attention.scorer}")
""")

md("regions", r"""
## 1. The regions: annotation vectors $a_i$

The encoder (EfficientNet-Lite0 for the default model, its stage 5 fine-tuned) sees the whole
image resized to a square and returns a $G \times G$ grid of feature vectors. Flattened, these are the paper's
**annotation vectors** $a_1, \dots, a_P \in \mathbb{R}^E$; region $i$ is row $\lfloor i / G \rfloor$,
column $i \bmod G$ of the image.

We also let the model caption the image greedily (the most probable word at each step). That
caption is what we take apart below.
""")

code("encode", r"""
image = load_image(IMAGE_PATH)
x = cap.preprocess(image).unsqueeze(0)  # (1, 3, S, S)
with torch.inference_mode():
    features = model.encode(x)  # (1, P, E)
    [greedy] = greedy_search(decoder, features, start_id=vocab.start_id, end_id=vocab.end_id,
                             pad_id=vocab.pad_id, max_len=20)
tokens = vocab.decode(greedy.tokens)
assert tokens, "the model wrote an empty caption for this image; try another one"
print("features a:", tuple(features.shape), "= (1, P, E)")
print("greedy caption:", " ".join(tokens))
display(image.resize((224, 224)))
""")

md("step-math", r"""
## 2. One decoding step, by hand

The decoder is an LSTM. Before writing word $t$ it holds a hidden state $h = h_{t-1} \in \mathbb{R}^H$,
and `Decoder.step` does the following (paper sections 3.1.2 and 4.2.1):

* **Score** every region. The paper uses additive (Bahdanau) attention:
  $e_i = w^\top \tanh(W_k a_i + W_q h)$. The *keys* $W_k a_i$ depend only on the image, so they are
  computed once per image (`decoder.prepare`); the *query* $W_q h$ changes at every word. The
  scores are unbounded and only their differences matter.
* **Normalise** with a softmax over regions: $\alpha_i = \exp(e_i) / \sum_j \exp(e_j)$. Every
  $\alpha_i$ is positive and they sum to 1: a probability distribution over *where to look*.
  "Soft" attention means every region contributes, in proportion to $\alpha_i$.
* **Read** the image: the context vector $\hat z = \sum_i \alpha_i a_i \in \mathbb{R}^E$, the
  expected annotation vector under $\alpha$.
* **Gate** it: $\beta = \sigma(f_\beta(h)) \in (0, 1)$ and $z = \beta \, \hat z$. The model can turn
  the image down for words that need no looking ("a", "and") and up for object words.
* The LSTM then reads $[\text{embedding of } y_{t-1};\ z]$, and the deep output layer predicts word $t$.

Below, the decoder is run with **teacher forcing on the model's own greedy caption**: we feed
`<start>`, $w_1$, $w_2$, ... and record $e$, $\alpha$, $\hat z$ and $\beta$ at every step. Because the
inputs are the greedy words, the maps must be exactly those greedy decoding produced, which the
cell checks.
""")

code("teacher-forcing", r"""
steps = []  # one record per generated word
with torch.inference_mode():
    keys = decoder.prepare(features)  # W_k a_i for every region, once per image
    state = decoder.init_state(features)  # h_0, c_0 from the mean annotation vector
    inputs = [vocab.start_id, *greedy.tokens]  # word t is predicted from word t - 1
    for t, word in enumerate(tokens):
        scores = attention.scores(features, keys, state.h)[:, 0]  # (1, 1, P) -> (1, P): e_i from h_{t-1}
        out = decoder.step(torch.tensor([inputs[t]]), state, features, keys)
        context = out.alpha @ features[0]  # (1, P) @ (P, E) -> (1, E): sum_i alpha_i a_i
        steps.append({"word": word, "e": scores[0], "alpha": out.alpha[0], "context": context[0],
                      "beta": float(out.beta), "h": state.h})
        state = out.state

alphas = torch.stack([s["alpha"] for s in steps]).numpy().reshape(len(steps), G, G)  # (T, G, G)
assert all(torch.allclose(s["e"].softmax(dim=0), s["alpha"], atol=1e-6) for s in steps)
assert np.allclose(alphas, greedy.alphas.numpy().reshape(-1, G, G), atol=1e-5)
print(f"{len(steps)} steps; alpha = softmax(e) at each; maps identical to greedy decoding's")
""")

code("one-word", r"""
shape_words = [t for t, s in enumerate(steps) if s["word"] in SHAPES]
t = shape_words[0] if shape_words else 0  # the first shape word, else the first word
s = steps[t]
P = s["alpha"].numel()
k = min(5, P)


def region(i: int) -> str:
    return f"region {i:3d} (row {i // G:2d}, col {i % G:2d})"


print(f'word {t + 1} of {len(steps)}: "{s["word"]}"   (caption: {" ".join(tokens)})\n')
print(f"top-{k} raw scores e_i = w^T tanh(W_k a_i + W_q h):")
for i in s["e"].topk(k).indices.tolist():
    print(f"  {region(i)}   e = {float(s['e'][i]):+.4f}")
print(f"\ntop-{k} weights alpha_i = softmax(e)_i:")
for i in s["alpha"].topk(k).indices.tolist():
    print(f"  {region(i)}   alpha = {float(s['alpha'][i]):.4f}")
print(f"  the top {k} hold {float(s['alpha'].topk(k).values.sum()):.4f} of the weight "
      f"(uniform attention would give each region {1 / P:.4f})")
print(f"sum of alpha over all {P} regions = {float(s['alpha'].sum()):.6f}")
ctx_norm = float(s["context"].norm())
print(f"\n||context|| = ||sum_i alpha_i a_i|| = {ctx_norm:.4f}   "
      f"(for scale: the mean ||a_i|| is {float(features[0].norm(dim=1).mean()):.4f})")
print(f"beta = sigmoid(f_beta(h)) = {s['beta']:.4f},  so ||z|| = beta * ||context|| = {s['beta'] * ctx_norm:.4f}")
""")

md("gate-note", r"""
Reading the numbers: the softmax is shift-invariant, so a score matters only relative to the
others; a gap of 1 in $e$ is a factor $e \approx 2.7$ in $\alpha$. The context norm is below the
mean $\|a_i\|$ because averaging vectors that point in different directions shrinks them, and
the sharper $\alpha$, the closer $\hat z$ stays to a single region's vector.

The gate at every word (for a trained model, object words usually get a larger $\beta$ than
function words):
""")

code("gate-table", r"""
print(f"{'word':<12}{'beta':>8}{'max alpha':>12}   most attended region")
for s_ in steps:
    i = int(s_["alpha"].argmax())
    print(f"{s_['word']:<12}{s_['beta']:>8.3f}{float(s_['alpha'][i]):>12.3f}   {region(i)}")
""")

md("overlays", r"""
## 3. Every word's attention map

`overlay.panel_grid` draws the paper's figure: the image, then one overlay per word. Each
$G \times G$ map is upsampled bicubically to the image and scaled to its own maximum, so the
colours show *where* the model looked, not how sharply (the numbers above say that).
""")

code("panel", r"""
display(panel_grid(image, tokens, alphas, columns=5, panel_size=160))
""")

md("scorers", r"""
## 4. Scoring functions compared

The softmax and the weighted sum are the same for every attention variant; what differs is how
the score $e_i$ is computed from $a_i$ and $h$ (`captioner.model.attention`):

| scorer | $e_i$ | origin |
| --- | --- | --- |
| additive | $w^\top \tanh(W_k a_i + W_q h)$ | Bahdanau et al. 2015; the paper's choice |
| dot | $(W_q h) \cdot (W_k a_i)$ | projected dot product |
| scaled dot | $(W_q h) \cdot (W_k a_i) / \sqrt{d_k}$ | Vaswani et al. 2017, with $d_k = A$ |
| general | $h^\top W a_i$ | Luong et al. 2015, bilinear |

Below, all four score **the same features and the same hidden state** (the one before the word
chosen in part 2). **Only the model's own scorer is trained.** The others are freshly, randomly
initialised (seed 0) and have never seen a caption, so their maps say nothing about *what* a
trained model of that kind would look at. What they do show is the *shape* of the distribution
each form produces at initialisation, measured by

* the entropy $H(\alpha) = -\sum_i \alpha_i \log \alpha_i$: $\log P$ for uniform attention, 0 when
  all weight sits on one region;
* the largest weight $\max_i \alpha_i$.

Dot and scaled dot are given the *same* random projections, so they differ only by the factor
$1/\sqrt{d_k}$. For query and key components of unit variance, a dot product over $d_k$
components has variance $d_k$: unscaled scores grow with the dimension and push the softmax
towards a one-hot, near-zero-gradient regime. Dividing by $\sqrt{d_k}$ restores unit variance.
""")

code("compare", r"""
E = features.size(2)
H = decoder.lstm.hidden_size
A = attention.attention_dim
h = s["h"]  # (1, H): the hidden state before the chosen word

torch.manual_seed(0)
scorers = {f"{attention.scorer} (trained)": attention}
for name in ("additive", "dot", "scaled_dot", "general"):
    if name != attention.scorer:
        scorers[f"{name} (untrained)"] = Attention(scorer=name, encoder_dim=E, hidden_dim=H, attention_dim=A).eval()
by_scorer = {att.scorer: (label, att) for label, att in scorers.items()}
if "untrained" in by_scorer["scaled_dot"][0]:  # same projections as dot: only 1/sqrt(A) differs
    by_scorer["scaled_dot"][1].load_state_dict(by_scorer["dot"][1].state_dict())

maps = {}
print(f"P = {P} regions: uniform attention has entropy log P = {math.log(P):.3f} nats and max alpha {1 / P:.4f}")
print(f"A = d_k = {A}, sqrt(d_k) = {math.sqrt(A):.1f}\n")
print(f"{'scorer':<24}{'std of e':>10}{'entropy':>10}{'max alpha':>11}")
with torch.inference_mode():
    for label, att in scorers.items():
        e = att.scores(features, att.project_keys(features), h)[0, 0]  # (1, 1, P) -> (P,)
        alpha = e.softmax(dim=0)  # (P,)
        entropy = float(-(alpha * alpha.clamp_min(1e-12).log()).sum())
        maps[label] = alpha.numpy().reshape(G, G)
        print(f"{label:<24}{float(e.std()):>10.3f}{entropy:>10.3f}{float(alpha.max()):>11.4f}")

# "nearest" draws the cells as they are, without bicubic smoothing between them.
display(panel_grid(image, list(maps), np.stack(list(maps.values())), columns=5, panel_size=160,
                   options=OverlayOptions(mode="nearest")))
""")

md("takeaways", r"""
What to take away:

* $\alpha$ is a distribution over regions, recomputed for every word from the decoder's state;
  the context vector is the image "read" through it, and $\beta$ decides how much of that
  reading reaches the LSTM.
* The scoring function sets the *scale* of the scores, and the scale sets how peaked the softmax
  is. The unscaled dot product's scores are $\sqrt{d_k}$ times larger than the scaled one's, so
  its distribution is much sharper (lower entropy) for the same projections.
* Untrained scorers are not a verdict on which scorer is better: that needs each one trained,
  (e.g. with `--set model.scorer=scaled_dot`) and compared on held-out captions.
""")


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata = {
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"},
    }
    for cell_id, kind, source in CELLS:
        cell = new_markdown_cell(source) if kind == "markdown" else new_code_cell(source)
        cell.id = cell_id  # fixed ids keep the file byte-identical across regenerations
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def main() -> None:
    nbformat.write(build(), OUT)
    print(f"wrote {OUT} ({len(CELLS)} cells)")


if __name__ == "__main__":
    main()
