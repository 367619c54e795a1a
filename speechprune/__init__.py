"""speechprune: make self-supervised speech encoders smaller and faster without task labels."""

__version__ = "0.1.0"
