"""Cold start: a new line's images, no labels and no model yet.

Two pieces the services compose: how far the labelled set is from the first model (it
trains itself once there are enough labels, a few of them defective), and the label an
image declared good on the way in receives.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.masks import decode_mask
from storage.repository import Repository
from storage.schema import CorrectionAction

GOOD = "good"  # the one label an image may be declared with on ingest
GOOD_NOTE = "declared good on ingest"
FIRST_MODEL_TRIGGER = "first-model"


def parse_ingest_label(label: str | None) -> str | None:
    """None or `good`; ValueError (422) for anything else."""
    if label is None or label == GOOD:
        return label
    raise ValueError(f"label must be {GOOD!r} or left out; got {label!r}")


@dataclass(frozen=True)
class LabelProgress:
    """The labelled set against the first model's threshold: K labels given in review (an
    image declared good on the way in is a label too, and training data, but it is the
    normality model's input, not the reviewing the first model waits for), at least M of
    them defective."""

    labels: int  # given in review
    defective: int
    needed: int  # labels, K
    min_defective: int
    declared_good: int = 0

    @property
    def enough(self) -> bool:
        return self.labels >= self.needed and self.defective >= self.min_defective


def label_progress(repo: Repository, *, needed: int, min_defective: int) -> LabelProgress:
    """Count the labels (newest non-skipped correction of each image), those declared good
    on ingest, and the defective ones (a non-empty mask; one marked defect-free is never
    decoded)."""
    labelled = repo.reviews.labelled_since(0)
    declared = sum(
        1
        for item in labelled
        if item.correction.action is CorrectionAction.defect_free
        and item.correction.note == GOOD_NOTE
    )
    defective = sum(
        1
        for item in labelled
        if item.correction.action is not CorrectionAction.defect_free
        and item.correction.mask_sha256 is not None
        and decode_mask(repo.blobs.get(item.correction.mask_sha256)).any()
    )
    return LabelProgress(len(labelled) - declared, defective, needed, min_defective, declared)
