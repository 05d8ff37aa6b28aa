"""Decoding throughput (images/s) and its scaling in caption length T and beam size K.

Measured from features: the beam search over the decoder, after the CNN, so the CNN (the same
cost per image either way) does not hide the difference between batching and not. Batched
means one `beam_search` call for all images; one-by-one means one call per image, as a
server answering single requests would run it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from captioner.model.decoder import Decoder
from captioner.words.search import beam_search

from common import Figure, interleaved, judged, log, median, repeat, run_child, timed, worker_cmd
from models import DefaultModel, Sizes, recipe_config, without_end


def scene_images(work: Path, n: int) -> list[Path]:
    """n synthetic scenes (the default model's domain), generated once per work directory."""
    from captioner.data.scenes import generate_scenes

    out = work / f"scenes-{n}"
    if not (out / "captions.json").is_file():
        generate_scenes(out, n, seed=1)
    return sorted((out / "images").glob("*.png"))[:n]


def recipe_decoder(sizes: Sizes) -> Decoder:
    """The ResNet-101 recipe's decoder (E=2048, 512/512/512, V=sizes.vocab), random weights."""
    cfg = recipe_config(sizes)
    torch.manual_seed(0)
    return Decoder(vocab_size=sizes.vocab, encoder_dim=2048, embed_dim=cfg.embed_dim,
                   attention_dim=cfg.attention_dim, hidden_dim=cfg.hidden_dim, dropout=cfg.dropout,
                   scorer=cfg.scorer).eval()


def recipe_features(sizes: Sizes, n: int) -> torch.Tensor:
    """(n, P, 2048) non-negative random features, like a ReLU CNN's."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, sizes.grid * sizes.grid, 2048, generator=g).abs()


def decode(decoder: Decoder, feats: torch.Tensor, beam: int, max_len: int) -> list:
    # start/end/pad ids are the Vocab's fixed 1/2/0
    return beam_search(decoder, feats, start_id=1, end_id=2, pad_id=0, beam_size=beam, max_len=max_len)


def throughput(name: str, decoder: Decoder, feats: torch.Tensor, sizes: Sizes, max_len: int,
               note: str) -> tuple[list[Figure], dict[int, float]]:
    """Batched and one-by-one images/s for each beam size; also the batched medians by K."""
    N = feats.size(0)
    figs, batched_s = [], {}
    for K in sizes.beams:
        t_batch = median(repeat(lambda: decode(decoder, feats, K, max_len), repeats=sizes.decode_repeats))
        decode(decoder, feats[:1], K, max_len)  # warm-up of the B=1 shapes
        t_single = sum(timed(lambda i=i: decode(decoder, feats[i:i + 1], K, max_len)) for i in range(N))
        steps = np.mean([len(h[0].tokens) + 1 for h in decode(decoder, feats, K, max_len)])
        batched_s[K] = t_batch
        figs += [
            Figure(f"decode.{name}.beam{K}.batched", N / t_batch, "images/s",
                   note=f"beam search from features (CNN excluded), {N} images per call, "
                        f"median of {sizes.decode_repeats}; {note}"),
            Figure(f"decode.{name}.beam{K}.one_by_one", N / t_single, "images/s",
                   note=f"{N} calls of 1 image; mean caption {steps:.1f} steps"),
        ]
        ratio_name = f"decode.{name}.beam{K}.batched_over_one_by_one"
        figs.append(judged(ratio_name, t_single / t_batch, "x", ">=", 4) if K == 5
                    else Figure(ratio_name, t_single / t_batch, "x"))
        log(f"decoding {name} K={K}: batched {N / t_batch:.1f} img/s, one-by-one {N / t_single:.1f} img/s")
    return figs, batched_s


class _StepRecorder:
    """A decoder that keeps the arguments of every `step` call, so that a search's decoder steps
    can be replayed alone, without the search around them."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):
        return getattr(self.decoder, name)

    def step(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.decoder.step(*args, **kwargs)


def steps_bound_figure(name: str, decoder: Decoder, feats: torch.Tensor, beam: int, max_len: int,
                       rounds: int) -> list[Figure]:
    """How far batching can go with this decoder here: one-by-one search time over the time of
    the batched search's decoder work replayed alone: the per-image keys and initial state, then
    its decoder steps (the same calls, same shapes), without the search's log-softmax, top-k and
    bookkeeping. A batched search cannot take less than that, so no search code reaches a
    batched/one-by-one ratio above this without a cheaper decoder."""
    rec = _StepRecorder(decoder)
    decode(rec, feats, beam, max_len)  # type: ignore[arg-type]

    def steps_alone() -> None:
        with torch.no_grad():
            decoder.prepare(feats)
            decoder.init_state(feats)
            for args, kwargs in rec.calls:
                decoder.step(*args, **kwargs)

    def one_by_one() -> None:
        for i in range(feats.size(0)):
            decode(decoder, feats[i:i + 1], beam, max_len)

    t = interleaved({"batched": lambda: decode(decoder, feats, beam, max_len), "steps": steps_alone,
                     "one_by_one": one_by_one}, rounds=rounds, warmup=1)
    tb, ts, t1 = median(t["batched"]), median(t["steps"]), median(t["one_by_one"])
    return [Figure(f"decode.{name}.beam{beam}.decoder_steps_bound", t1 / ts, "x",
                   note=f"one-by-one search {1000 * t1:.0f} ms / the batched search's keys, initial state and "
                        f"{len(rec.calls)} decoder steps alone {1000 * ts:.0f} ms (whole batched search {1000 * tb:.0f} ms, "
                        f"so {t1 / tb:.2f}x in these rounds); median of {rounds}, interleaved")]


def threads_figure(decoder: Decoder, one: torch.Tensor, max_len: int, repeats: int = 5) -> list[Figure]:
    """One image, beam 3, at torch's thread count against 1 thread (alternating calls)."""
    n = torch.get_num_threads()
    if n == 1:
        return []
    times: dict[int, list[float]] = {1: [], n: []}
    try:
        for _ in range(repeats + 1):
            for th in (1, n):
                torch.set_num_threads(th)
                times[th].append(timed(lambda: decode(decoder, one, 3, max_len)))
    finally:
        torch.set_num_threads(n)
    t1, tn = median(times[1][1:]), median(times[n][1:])
    return [Figure("decode.default.one_image_threads_speedup", t1 / tn, "x",
                   note=f"one image, beam 3: {1000 * t1:.0f} ms with 1 thread, {1000 * tn:.0f} ms with {n}")]


def attention_slices_figure(name: str, decoder: Decoder, feats: torch.Tensor, beam: int, rounds: int) -> list[Figure]:
    """The additive scores of one beam-search step, 32 images x K beams: the (B, K, P, A) sum
    made whole (the autograd form training uses) against in cache-sized slices (decoding)."""
    att = decoder.attention
    if att.scorer != "additive":
        return []
    B = feats.size(0)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(B * beam, decoder.f_beta.in_features, generator=g)  # (B*K, H)
    with torch.no_grad():
        keys = att.project_keys(feats)

        def whole() -> torch.Tensor:
            return att.scores(feats, keys, hidden)  # (B, K, P)

        def sliced() -> torch.Tensor:
            return att.scores(feats, keys, hidden, sliced=True)  # (B, K, P)

        diff = (whole() - sliced()).abs().max().item()
        t = interleaved({"whole": whole, "sliced": sliced}, rounds=rounds, warmup=1)
    tw, ts = median(t["whole"]), median(t["sliced"])
    return [Figure(f"decode.{name}.attention_slices_speedup", tw / ts, "x",
                   note=f"additive scores for {B} images x beam {beam}, A={keys.size(2)}: "
                        f"{1000 * tw:.2f} ms whole, {1000 * ts:.2f} ms in slices; max diff {diff:.1e}")]


def default_features(dm: DefaultModel, sizes: Sizes, work: Path):
    """The default model's decoder and the real encoder grids of generated scenes. The encoder's
    own speed is measured in the e2e section (e2e.default.encoder_*)."""
    from captioner.api import load_captioner
    from captioner.image.loading import load_image

    cap = load_captioner(dm.checkpoint, device="cpu")
    paths = scene_images(work, sizes.decode_images)
    x = torch.stack([cap.preprocess(load_image(p)) for p in paths])  # (N, 3, S, S)
    with torch.inference_mode():
        return cap.model.decoder, cap.model.encode(x).clone()


def fresh_process_figures(sizes: Sizes, work: Path, beam: int = 5) -> list[Figure]:
    """Batched / one-by-one at K=5 again, each model in a fresh process of its own."""
    figs = []
    for model in ("default", "resnet101") if not sizes.quick else ("resnet101",):
        r = run_child(worker_cmd("beam-fresh", "--model", "recipe" if model == "resnet101" else "default",
                                 "--beam", str(beam), "--work", str(work),
                                 *(["--quick"] if sizes.quick else []))).last_json()
        figs.append(Figure(f"decode.{model}.beam{beam}.fresh_process.batched_over_one_by_one",
                           r["one_by_one_s"] / r["batched_s"], "x",
                           note=f"{r['images']} images; batched {r['batched_s']:.3f} s "
                                f"({r['faults_per_batched_call']:.0f} page faults/call), one-by-one {r['one_by_one_s']:.3f} s"))
        log(f"decoding {model} in a fresh process: batched / one-by-one {figs[-1].value:.2f}")
    return figs


def run(sizes: Sizes, dm: DefaultModel, work: Path) -> tuple[list[Figure], list[dict]]:
    figs: list[Figure] = []
    # The default model stops at <end>; max_len 50 is the CLI's default.
    decoder, feats = default_features(dm, sizes, work)
    max_len = 50
    f, _ = throughput("default", decoder, feats, sizes, max_len,
                      f"{dm.label}; real grids of generated scenes; max_len {max_len}")
    figs += f + threads_figure(decoder, feats[:1], max_len)
    figs += attention_slices_figure("default", decoder, feats, 5, rounds=5 * sizes.decode_repeats)
    figs += steps_bound_figure("default", decoder, feats, 5, max_len, rounds=2 * sizes.decode_repeats)

    # The ResNet-101-sized decoder, <end> disabled so every caption is exactly max_len steps.
    rdec = without_end(recipe_decoder(sizes), end_id=2)
    rfeats = recipe_features(sizes, sizes.decode_images)
    f, batched = throughput("resnet101", rdec, rfeats, sizes, sizes.decode_max_len,
                            f"E=2048, 512/512/512, V={sizes.vocab}, random weights, <end> disabled, "
                            f"{sizes.decode_max_len} steps")
    figs += f + attention_slices_figure("resnet101", rdec, rfeats, 5, rounds=5 * sizes.decode_repeats)
    figs += steps_bound_figure("resnet101", rdec, rfeats, 5, sizes.decode_max_len, rounds=sizes.decode_repeats)

    figs += fresh_process_figures(sizes, work)

    # Scaling: batched seconds against T (at K=3) and K (at T=decode_max_len).
    rows = []
    T0, K0 = sizes.decode_max_len, 3 if 3 in sizes.beams else sizes.beams[-1]
    for T in sizes.scale_lengths:
        t = batched[K0] if T == T0 else median(repeat(lambda: decode(rdec, rfeats, K0, T), repeats=sizes.decode_repeats))
        rows.append({"table": "decode_T", "T": T, "K": K0, "seconds": t, "images": rfeats.size(0)})
        log(f"decoding scaling: T={T} K={K0}: {t:.3f} s")
    for K in sizes.scale_beams:
        t = batched[K] if K in batched else median(repeat(lambda: decode(rdec, rfeats, K, T0), repeats=sizes.decode_repeats))
        rows.append({"table": "decode_K", "T": T0, "K": K, "seconds": t, "images": rfeats.size(0)})
        log(f"decoding scaling: T={T0} K={K}: {t:.3f} s")
    return figs, rows
