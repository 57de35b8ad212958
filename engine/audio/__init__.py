"""The audio foundation: codec, external music model, Emotion Predictor (LARA-Gen builds on it)."""
