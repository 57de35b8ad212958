"""EmoGen-style symbolic generation (Huang et al., arXiv 2307.01229), extended to
valence/arousal that changes within a piece."""
