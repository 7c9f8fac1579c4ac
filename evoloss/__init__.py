"""evoloss: evolutionary and meta-learned loss search for noisy labels."""
