"""Data: labelled datasets on disk, their audit (exact and near duplicates, conflicts, leakage) and grouped splits.

Decoding images is the imaging core's job (:mod:`braintumor.imaging`); this package decides which images exist,
what their labels mean and where each one may go.
"""

from braintumor.data.audit import AuditReport, audit_records
from braintumor.data.datasets import ImageRecord, discover, discover_many, is_tumor_label, load_seed_layout

__all__ = [
    "AuditReport",
    "ImageRecord",
    "audit_records",
    "discover",
    "discover_many",
    "is_tumor_label",
    "load_seed_layout",
]
