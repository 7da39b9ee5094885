"""Errors the model layer raises for bad input; each message names the offending file."""


class HeatPromptError(Exception):
    """Base class for errors a user can fix (bad file, wrong checkpoint, missing weights)."""


class ImageError(HeatPromptError):
    """An image or mask file that cannot be used."""


class DatasetError(HeatPromptError):
    """A data folder that holds nothing usable or has an unknown layout."""


class CheckpointError(HeatPromptError):
    """A checkpoint that is unreadable or belongs to another encoder."""


class WeightsError(HeatPromptError):
    """SAM weights that are missing, corrupt or cannot be downloaded."""
