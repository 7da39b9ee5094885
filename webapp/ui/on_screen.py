"""What the Review tab keeps per page besides the masks: the view, the refine clicks and
the selected region, and how the editor's strokes are folded into the native typed mask of
that view."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from webapp.display_view import Region, View
from webapp.editor_masks import edited_typed, palette_of
from webapp.typed_regions import TypedMask, TypeStyle
from webapp.ui.regions import unspecified_id

RefineClick = tuple[float, float, bool]  # (x, y) in native image pixels, positive?


@dataclass(frozen=True)
class OnScreen:
    """How the current image is shown besides its masks: the view (zoom and centre), the
    refine clicks so far (native pixels) and the selected region (a native pixel of it). One
    state, because placing a click needs the view; all start afresh with each image."""

    view: View = field(default_factory=View)
    clicks: tuple[RefineClick, ...] = ()
    selected: tuple[int, int] | None = None


def region_of(typed: TypedMask | None, screen: OnScreen | None) -> Region | None:
    """The native region the editor shows of the mask (None without a mask)."""
    return None if typed is None else (screen or OnScreen()).view.region(typed.shape)


def fold(
    typed: TypedMask | None,
    value: dict[str, Any] | None,
    screen: OnScreen | None,
    types: list[TypeStyle],
) -> TypedMask:
    """The typed mask with the editor's strokes in it (each in its brush's type)."""
    return edited_typed(
        typed, value, region_of(typed, screen), palette_of(types), unspecified_id(types)
    )
