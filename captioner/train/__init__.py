"""Training, in stages: `data` (splits, feature caches), `optim` (optimizer, scheduler, scaler),
`loop` (`train`, `train_one_epoch`, `train_step`, `evaluate`), `resume` (what last.pt holds and
how a run continues from it) and `distributed` (ranks under torchrun)."""
