"""MoodLane engine: emotion-controlled music generation. No I/O happens here."""

from moodlane.engine.emotion import Emotion, EmotionError

__all__ = ["Emotion", "EmotionError"]
__version__ = "0.1.0"
