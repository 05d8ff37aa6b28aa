"""Training: the loop, validation, resume and distributed set-up."""
