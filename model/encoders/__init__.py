"""Frozen image encoders behind one interface (see `base.FrozenEncoder`)."""

from model.encoders.base import EncoderOutput, FrozenEncoder
from model.encoders.registry import ENCODER_NAMES, build_encoder

__all__ = ["ENCODER_NAMES", "EncoderOutput", "FrozenEncoder", "build_encoder"]
