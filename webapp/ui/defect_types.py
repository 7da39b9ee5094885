"""Defect types on the page: the picker's choices, the legend (colour, name, shortcut key),
the queue filter's choices, and the admin panel that adds and changes types.

The legend also carries the key → picker-label table that `static/shortcuts.js` reads, so
the page's shortcut keys follow the database without a reload of the script.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

import gradio as gr

from storage.defect_types import PALETTE, RESERVED_KEYS
from storage.errors import StorageError
from storage.schema import User
from webapp.editor_masks import CLEAR_RGB
from webapp.permissions import Permission, PermissionDenied, allowed
from webapp.services import Services
from webapp.typed_regions import TypeStyle, hex_rgb
from webapp.ui.common import signed_in

ALL_TYPES = "*"  # the queue filter's "no filter" value
MIN_CLEAR_DISTANCE = 60  # RGB distance a type colour keeps from the background brush


def type_styles(services: Services) -> list[TypeStyle]:
    """The project's defect types, "unspecified" first (by id)."""
    return [TypeStyle.of(row) for row in services.defect_types()]


def picker_choices(types: Sequence[TypeStyle]) -> list[tuple[str, int]]:
    return [(t.label, t.id) for t in types]


def filter_choices(types: Sequence[TypeStyle]) -> list[tuple[str, str]]:
    """The queue filter: every image, or those whose prediction has a region of a type."""
    return [("All types", ALL_TYPES), *((t.name, t.name) for t in types)]


def wanted_type(choice: str | None) -> str | None:
    """The filter's choice as `next_for_review`'s `defect_type` (None: no filter)."""
    return None if not choice or choice == ALL_TYPES else choice


def legend_html(types: Sequence[TypeStyle]) -> str:
    """The types with their colours and keys, and (as data) which type id each key chooses;
    the picker's options (in the same order) get the same colours."""
    keys = {t.key: str(t.id) for t in types if t.key}
    style = "".join(
        f"#type-picker label:nth-of-type({i}) span::before{{background:{html.escape(t.color)}}}"
        for i, t in enumerate(types, start=1)
    )
    items = "".join(
        f'<li><span class="type-swatch" style="background:{html.escape(t.color)}"></span>'
        f"{html.escape(t.name)}" + (f" <kbd>{html.escape(t.key)}</kbd>" if t.key else "") + "</li>"
        for t in types
    )
    data = html.escape(json.dumps(keys), quote=True)
    return f'<style>{style}</style><ul class="type-legend" data-type-keys="{data}">{items}</ul>'


def check_new_type(color: str | None, key: str | None) -> None:
    """Refuse what the page could not use (the store checks the rest): a key the review
    shortcuts already take, a colour the background brush could be taken for."""
    if key and key in RESERVED_KEYS:
        raise ValueError(f"key {key!r} is a review shortcut (A, S, D, K, N); choose another")
    if color:
        rgb = hex_rgb(color)
        distance = sum((a - b) ** 2 for a, b in zip(rgb, CLEAR_RGB, strict=True)) ** 0.5
        if distance < MIN_CLEAR_DISTANCE:
            raise ValueError(
                f"colour {color} is too close to the background brush's; choose another"
            )


def suggested_colour(types: Sequence[TypeStyle]) -> str:
    """The colour the add form offers: the first palette colour no type has yet (the admin
    may pick another)."""
    used = {t.color.lower() for t in types}
    return next((c for c in PALETTE if c not in used), PALETTE[len(used) % len(PALETTE)])


def normalise_colour(color: str | None) -> str | None:
    """The colour picker's value as "#rrggbb" (None: let the store pick a palette colour).
    Gradio's picker may answer "rgb(…)" / "rgba(…)" instead of hex."""
    if not color:
        return None
    text = color.strip()
    if text.startswith("rgb"):
        parts = text[text.index("(") + 1 : text.index(")")].split(",")[:3]
        return "#" + "".join(f"{round(float(p)):02x}" for p in parts)
    return text


NEW_TYPE = 0  # the panel's "which type" choice for a type not yet added


def edit_choices(types: Sequence[TypeStyle]) -> list[tuple[str, int]]:
    """The panel's "which type" choices: a new one, then every existing type."""
    return [("New type", NEW_TYPE), *((t.label, t.id) for t in types)]


def build_type_admin(services: Services, page: gr.Blocks) -> list[Any]:
    """The Defect types panel: every type with its colour and key for everyone, and for
    admins a form to add a type or change one (name, colour, key). Returns the add and
    save events, for other panels to follow them."""

    def listing(request: gr.Request):  # type: ignore[no-untyped-def]
        user = signed_in(services, request)
        types = type_styles(services)
        return (
            legend_html(types),
            gr.update(visible=may_manage(user)),
            suggested_colour(types),
            gr.update(choices=edit_choices(types), value=NEW_TYPE),
        )

    def chosen(type_id: int | None):  # type: ignore[no-untyped-def]
        """The form filled with the chosen type's fields (empty for a new one)."""
        types = type_styles(services)
        found = next((t for t in types if t.id == type_id), None)
        if found is None:
            return "", suggested_colour(types), ""
        return found.name, found.color, found.key or ""

    def choices(value: int):  # type: ignore[no-untyped-def]
        return gr.update(choices=edit_choices(type_styles(services)), value=value)

    def add(name: str, color: str | None, key: str, request: gr.Request):  # type: ignore[no-untyped-def]
        user = signed_in(services, request)
        try:
            if user is None:
                raise PermissionDenied("sign in as an admin to add defect types")
            colour = normalise_colour(color)
            check_new_type(colour, key or None)
            added = services.add_defect_type(user, name, color=colour, key=key or None)
        except (PermissionDenied, StorageError, ValueError) as exc:
            return legend_html(type_styles(services)), gr.update(), gr.update(), f"⚠ {exc}"
        types = type_styles(services)  # the form is ready for the next new type
        message = f"Added defect type **{html.escape(added['name'])}**."
        return legend_html(types), choices(NEW_TYPE), suggested_colour(types), message

    def save(type_id: int | None, name: str, color: str | None, key: str, request: gr.Request):  # type: ignore[no-untyped-def]
        user = signed_in(services, request)
        try:
            if user is None:
                raise PermissionDenied("sign in as an admin to change defect types")
            if not type_id:
                raise ValueError("choose the type to change (or add a new one)")
            colour = normalise_colour(color)
            check_new_type(colour, key or None)
            fields: dict[str, Any] = {"name": name, "key": key or None}
            if colour:
                fields["color"] = colour
            saved = services.update_defect_type(user, int(type_id), **fields)
        except (PermissionDenied, StorageError, ValueError) as exc:
            return legend_html(type_styles(services)), gr.update(), f"⚠ {exc}"
        message = f"Saved defect type **{html.escape(saved['name'])}**."
        return legend_html(type_styles(services)), choices(saved["id"]), message

    legend = gr.HTML(elem_id="types-list")
    with gr.Group(visible=False) as form:
        which = gr.Dropdown(
            label="Type",
            choices=[("New type", NEW_TYPE)],
            value=NEW_TYPE,
            allow_custom_value=True,  # types added since the page loaded; the store checks
            elem_id="edit-type",
        )
        with gr.Row():
            name = gr.Textbox(label="Name", max_lines=1, elem_id="new-type-name", scale=3)
            color = gr.ColorPicker(label="Colour", scale=1, elem_id="new-type-colour")
            key = gr.Textbox(label="Key", max_lines=1, max_length=1, elem_id="new-type-key")
        with gr.Row():
            add_btn = gr.Button("Add defect type (admin)", elem_id="btn-add-type")
            save_btn = gr.Button("Save changes (admin)", elem_id="btn-save-type")
    message = gr.Markdown(elem_id="types-status")
    page.load(listing, None, [legend, form, color, which])
    which.input(chosen, [which], [name, color, key], api_name="defect_type_fields")
    return [
        add_btn.click(
            add, [name, color, key], [legend, which, color, message], api_name="add_defect_type"
        ),
        save_btn.click(
            save,
            [which, name, color, key],
            [legend, which, message],
            api_name="save_defect_type",
        ),
    ]


def may_manage(user: User | None) -> bool:
    """Whether the admin form is shown (the service checks again on every add)."""
    return allowed(user, Permission.manage_models)
