"""Training and evaluation jobs. These read dataset folders; the models themselves do no I/O."""
