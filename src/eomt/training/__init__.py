"""Training and fine-tuning with the EoMT recipe."""
