"""Single-image knowledge distillation (Asano & Saeed, ICLR 2023) in JAX/Flax."""
