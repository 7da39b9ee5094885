"""Errors raised by the storage layer; each says what was wrong."""


class StorageError(Exception):
    """Base class for storage errors a caller can report to a person."""


class NotFoundError(StorageError):
    """An id that names no row."""


class InvalidMaskError(StorageError):
    """A mask of the wrong size or with values other than 0 and 1 (or 0 and 255)."""


class BlobIntegrityError(StorageError):
    """A blob whose bytes no longer match its sha256."""


class DuplicateError(StorageError):
    """A name or key that another row holds already (HTTP 409)."""
