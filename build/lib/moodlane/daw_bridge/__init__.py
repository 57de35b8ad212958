"""MoodLane's DAW bridge: the CLI, sinks (MIDI/WAV files, ports, audio devices) and
control inputs. Hardware libraries are imported lazily, inside the backends."""
