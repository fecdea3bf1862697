"""Data: image I/O (files, bytes, DICOM), letterbox and channel transforms, datasets, audit, splits."""

from braintumor.data.audit import AuditReport, audit_records
from braintumor.data.datasets import ImageRecord, discover, discover_many, is_tumor_label, load_seed_layout
from braintumor.data.io import ImageMeta, LoadedImage, load_image, sniff_format
from braintumor.data.transforms import Placement, letterbox, to_gray, to_rgb

__all__ = [
    "AuditReport",
    "ImageMeta",
    "ImageRecord",
    "LoadedImage",
    "Placement",
    "audit_records",
    "discover",
    "discover_many",
    "is_tumor_label",
    "letterbox",
    "load_image",
    "load_seed_layout",
    "sniff_format",
    "to_gray",
    "to_rgb",
]
