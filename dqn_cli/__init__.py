"""dqn: train, tune, evaluate, record and share Deep Q-Network agents on Atari games."""

__version__ = "0.1.0"
