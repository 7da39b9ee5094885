"""Who may do what: one table from role to permissions, checked in the service layer.

The API and the UI never compare role names themselves; they ask `require` (which raises
`PermissionDenied`, answered as 403) or `allowed` (to grey out a button).
"""

from __future__ import annotations

import enum

from storage.schema import Role, User


class Permission(str, enum.Enum):
    read = "read"  # see images, predictions, corrections, models and runs
    ingest = "ingest"  # add images
    review = "review"  # lease images and save corrections
    export = "export"  # download labelled data
    train = "train"  # start or cancel training runs
    manage_models = "manage_models"  # promote and roll back model versions


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.viewer: frozenset({Permission.read}),
    Role.inspector: frozenset(
        {Permission.read, Permission.ingest, Permission.review, Permission.export}
    ),
    Role.admin: frozenset(Permission),
}

_VERBS = {
    Permission.read: "read",
    Permission.ingest: "add images",
    Permission.review: "review or correct masks",
    Permission.export: "export labelled data",
    Permission.train: "start or cancel training",
    Permission.manage_models: "promote or roll back models",
}


class PermissionDenied(Exception):
    """The user's role does not allow the action."""


def allowed(user: User | None, permission: Permission) -> bool:
    return user is not None and permission in ROLE_PERMISSIONS[user.role]


def require(user: User | None, permission: Permission) -> User:
    """The user, when their role allows `permission`; PermissionDenied otherwise."""
    if user is None:
        raise PermissionDenied(f"sign in to {_VERBS[permission]}")
    if not allowed(user, permission):
        raise PermissionDenied(
            f"user {user.name!r} is a {user.role.value} and cannot {_VERBS[permission]}"
        )
    return user
