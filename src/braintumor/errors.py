"""Typed errors shared by every layer.

Each error carries a one-line, user-facing reason (its ``str``). The API maps these classes to HTTP
status codes in one place and the CLI prints the reason and exits non-zero; neither shows a traceback.
"""

from __future__ import annotations


class BrainTumorError(Exception):
    """Base class of every error this package raises on purpose. ``code`` names the kind of refusal for clients
    that show each kind apart (the API sends it beside the reason)."""

    code: str | None = None


class ImageError(BrainTumorError, ValueError):
    """An input image could not be turned into pixels."""

    code = "unreadable"


class EmptyImageError(ImageError):
    """The input has no bytes at all."""


class UnsupportedImageError(ImageError):
    """The bytes are not an image format we read (decided by content, not by extension)."""

    code = "unsupported"


class CorruptImageError(ImageError):
    """The format is known but the data is truncated or damaged."""


class ImageTooLargeError(ImageError):
    """The image exceeds the pixel cap (decompression-bomb guard)."""

    code = "too_large"


class StudyError(ImageError):
    """An upload that cannot be scored as one study: several studies, no series the rules keep, or no slice that
    could be assessed (the reason says which)."""


class NoPixelDataError(ImageError):
    """A DICOM object without pixel data (a structured report, an RT plan …)."""


class DicomStructureError(CorruptImageError):
    """A DICOM whose element stream is malformed or nested deeper than the cap (refused before pydicom parses it)."""


class DecodeLimitError(ImageError):
    """Decoding an upload ran past its time or memory budget and was stopped (the file is not processed)."""


class ServiceBusyError(BrainTumorError):
    """A bounded resource (password-hashing slots) is saturated; the client should retry after ``retry_after`` s."""

    def __init__(self, message: str, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[type[ServiceBusyError], tuple[str, int]]:
        return type(self), (str(self), self.retry_after)


class DatasetError(BrainTumorError):
    """A dataset folder or split file is missing, empty or inconsistent."""


class UnknownModelError(BrainTumorError, ValueError):
    """A model name that is not in the registry (the message lists the registered names)."""


class ModelCardError(BrainTumorError, ValueError):
    """A model card is missing required fields or holds values that contradict each other."""


class ModelLoadError(BrainTumorError):
    """A model folder is missing, incomplete or inconsistent (serving refuses to start on it)."""


class WeightsError(BrainTumorError):
    """Base class of pretrained-weight problems."""


class WeightsNotAvailableError(WeightsError):
    """Pretrained weights were asked for but the expected file is not in the local cache.

    The message names the exact file expected and the command that provisions it; nothing is downloaded
    behind the user's back and nothing falls back to random initialisation.
    """


class WeightsInvalidError(WeightsError):
    """A weights file is unreadable, has the wrong SHA-256, or does not fit the architecture."""


class InvalidRequestError(BrainTumorError, ValueError):
    """An argument names something that does not exist (an unknown class, method, colormap …)."""


class NotAnMRIError(BrainTumorError, ValueError):
    """The input gate judged the image not to be a brain MRI slice (the message says why)."""

    code = "not_mri"


class OutOfScopeError(NotAnMRIError):
    """The input gate refused an image that may well be a brain MRI, but one unlike those the model was validated
    on (too small, an MR DICOM the gate finds unusual, skull-stripped or another sequence): the message says why."""

    code = "out_of_scope"
