# Two commands do everything on a fresh machine: `make demo` and `make test`.
# `make test-fast` is the edit loop: the suite without its `slow` tests (no training
# subprocesses, browser, JVM or notebook kernel); `make test` runs everything, as CI does.
# Both create .venv when it is missing and reinstall only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: demo test test-fast bench serve venv browser java default-model none-model hard-model hard-model-card model-card model-card-sets train-scenes train-scenes-10k ablation clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# torchvision from the registry brings its matching torch; never the local CPU-only wheel.
	$(PY) -m pip install --quiet -e '.[dev,serve,onnx,openvino]'
	@touch $(STAMP)

# Headless Chromium for the HTML overlay test (Debian package; needs root, as in CI).
browser:
	@test -x $(CHROMIUM) || { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) \
		|| echo "warning: could not install chromium; the HTML overlay browser test will not run"; }

# A JRE for METEOR and the PTB tokenizer, which pycocoevalcap runs as jars (Debian package; needs
# root, as in CI). The man1 folder: the JRE's postinst links a man page there, and slim images
# lack it.
java:
	@command -v java >/dev/null || { { test "$$(id -u)" -eq 0 && mkdir -p /usr/share/man/man1 && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends default-jre-headless >/dev/null; } \
		|| echo "warning: no java, and default-jre-headless could not be installed (needs root); the METEOR and PTB tokenizer tests will skip, or fail under CAPTIONER_REQUIRE_JAVA"; }

demo: venv
	$(VENV)/bin/captioner caption data/examples --overlay-dir out --gif --html
	@echo
	@echo "Overlays written to out/: one panel PNG, GIF and HTML page per image (open out/*.html in a browser)."

test: venv browser java
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not slow"

# The *_over_baseline figures compare with this commit, the last of captioner 0.1, checked out
# into a git worktree and measured in the same run.
BENCH_BASELINE ?= 1638135

bench: venv
	$(PY) bench/run.py --baseline $(BENCH_BASELINE)

# The web demo with the embedded model on http://127.0.0.1:8000 (README, "Web demo").
serve: venv
	$(VENV)/bin/captioner serve

# The training scenes of the default model (16,000 train, 2,000 val, 2,000 test).
train-scenes: venv
	$(VENV)/bin/captioner scenes --out datasets/scenes-train --num-images 20000 --seed 1

# The 10,000 scenes (seed 1) of the recipe before 2026-12-04, on which the `none` and hard
# variants of the README were trained (`none`: 20 epochs of 8,000, the same 2,500 steps).
TEN_K = --set data.data=datasets/scenes-train-10k/dataset.json \
	--set data.instances=datasets/scenes-train-10k/instances.json
train-scenes-10k: venv
	$(VENV)/bin/captioner scenes --out datasets/scenes-train-10k --num-images 10000 --seed 1

# Rebuild the embedded default model from scratch (README, "The default model").
default-model: train-scenes
	$(VENV)/bin/captioner train --config configs/scenes.toml --out runs/scenes
	$(VENV)/bin/captioner export runs/scenes/best.pt captioner/assets/default.pt --half

# The `none` ablation of the model card: the same recipe without attention (mean-pooled context).
none-model: train-scenes-10k
	$(VENV)/bin/captioner train --config configs/scenes.toml --out runs/scenes-none $(TEN_K) --set train.epochs=20 --set model.scorer=none

# Hard attention (lambda_r 0.1, the ablation's better hard row) on the default model's recipe,
# HARD_EPOCHS epochs (the soft recipe's 20 left it still improving); scored by `make
# hard-model-card` (README, "Attention ablation").
HARD_EPOCHS ?= 26
hard-model: train-scenes-10k
	$(VENV)/bin/captioner train --config configs/scenes.toml --out runs/scenes-hard-e$(HARD_EPOCHS) $(TEN_K) \
		--set model.attention=hard --set train.hard_reinforce_weight=0.1 --set train.epochs=$(HARD_EPOCHS)

hard-model-card: model-card-sets
	$(PY) data/model_card.py --out runs/model-card-hard-e$(HARD_EPOCHS) --sets $(MODEL_CARD_SETS) \
		--checkpoints runs/scenes-hard-e$(HARD_EPOCHS)/best.pt

# The model card's numbers: fresh scenes from seeds never used in training, in the training
# styles (seed 7), in the reserved styles training never saw (seed 9), with novel colour-shape
# pairs (seed 8), and drawn by a second renderer of the same spec (data/other_renderer.py, seed
# 11); then the table (runs/model-card/card.md). MODEL_CARD_CHECKPOINTS adds more models as
# columns (the `none` ablation: runs/scenes-none/best.pt).
MODEL_CARD_CHECKPOINTS ?= $(wildcard runs/scenes-none/best.pt)
model-card: model-card-sets
	$(PY) data/model_card.py --out runs/model-card --sets $(MODEL_CARD_SETS) --checkpoints default $(MODEL_CARD_CHECKPOINTS)

MODEL_CARD_SETS = datasets/scenes-heldout datasets/scenes-reserved datasets/scenes-novel datasets/scenes-other
model-card-sets: venv
	$(VENV)/bin/captioner scenes --out datasets/scenes-heldout --num-images 500 --seed 7
	$(VENV)/bin/captioner scenes --out datasets/scenes-reserved --num-images 500 --seed 9 --style reserved
	$(VENV)/bin/captioner scenes --out datasets/scenes-novel --num-images 200 --seed 8 --novel
	$(PY) data/other_renderer.py --out datasets/scenes-other --num-images 200 --seed 11

# The ablation study (README, "Attention ablation"): six soft scorers and hard attention, 2 seeds
# each, on one scenes dataset and budget, every decoder on the shipped default model's frozen
# encoder (bench/ablation.py --encoder imagenet: the ImageNet weights, the 2026-12-03 table).
ablation: venv
	$(PY) bench/ablation.py --out runs/ablation

clean:
	rm -rf out runs .pytest_cache
