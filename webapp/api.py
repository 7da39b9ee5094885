"""REST API under /api: bearer-token auth, JSON errors with a message.

A thin adapter: each route authenticates, translates the request into one `Services` call
and the answer into JSON. Routes are plain `def`s, so FastAPI runs them in its thread
pool: decoding, prediction, hashing and database work never block the event loop.

No `from __future__ import annotations` here: FastAPI resolves the dependency annotations
of the route functions, which are defined inside `build_router`.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from model.errors import CheckpointError
from storage.errors import BlobIntegrityError, DuplicateError, NotFoundError, StorageError
from storage.masks import decode_type_mask, encode_type_mask
from storage.review_queue import SaveConflict
from storage.schema import User
from webapp.ingest import IngestError
from webapp.mask_upload import decode_mask_upload
from webapp.model_server import NoModelError
from webapp.permissions import PermissionDenied
from webapp.review_order import DEFAULT_STRATEGY
from webapp.services import Services, png_bytes
from webapp.views import promotion_view, run_view, version_view


class ApiError(Exception):
    """An error answered as JSON `{"error": message, **extra}` with `status`."""

    def __init__(self, status: int, message: str, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra or {}


ERROR_STATUS: list[tuple[type[Exception], int]] = [
    (NotFoundError, 404),
    (PermissionDenied, 403),
    (SaveConflict, 409),
    (DuplicateError, 409),
    (NoModelError, 503),
    (BlobIntegrityError, 500),
    (CheckpointError, 422),
    (IngestError, 422),
    (StorageError, 422),
    (ValueError, 422),
]


def error_response(exc: Exception) -> JSONResponse:
    if isinstance(exc, ApiError):
        return JSONResponse({"error": exc.message, **exc.extra}, status_code=exc.status)
    for cls, status in ERROR_STATUS:
        if isinstance(exc, cls):
            return JSONResponse({"error": str(exc)}, status_code=status)
    return JSONResponse({"error": "internal error"}, status_code=500)


class NewDefectType(BaseModel):
    """POST /api/types: a type's name, and optionally its colour and keyboard key."""

    model_config = ConfigDict(extra="forbid")
    name: str
    color: str | None = None
    key: str | None = None


class DefectTypeChange(BaseModel):
    """PATCH /api/types/{id}: the fields to change (`"key": null` removes the key)."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    color: str | None = None
    key: str | None = None


def read_upload(file: UploadFile, limit: int) -> bytes:
    """At most `limit` bytes of an uploaded file; IngestError (422) beyond it, so an
    oversize upload is never read whole into memory."""
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise IngestError(f"{file.filename or 'upload'}: larger than the limit of {limit} bytes")
    return data


def build_router(services: Services) -> APIRouter:
    """All /api routes, bound to `services`."""
    router = APIRouter(prefix="/api")
    limit = services.settings.max_image_bytes

    def current_user(authorization: Annotated[str | None, Header()] = None) -> User:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)")
        user = services.user_for_token(authorization.split(None, 1)[1].strip())
        if user is None:
            raise ApiError(401, "unknown, expired or revoked token")
        return user

    Authed = Annotated[User, Depends(current_user)]

    @router.get("/health")
    def health() -> dict[str, Any]:
        return services.health()

    @router.post("/images", status_code=201)
    def upload_image(
        user: Authed, file: UploadFile = File(...), label: str | None = Form(None)
    ) -> dict[str, Any]:
        """Store an image; `label=good` declares it defect-free (a label, for reviewers)."""
        data = read_upload(file, limit)
        result = services.ingest(
            data, file.filename or "upload", user=user, source=f"api:{user.name}", label=label
        )
        return {
            "id": result.id,
            "sha256": result.sha256,
            "duplicate": result.duplicate,
            "labelled": result.labelled,
        }

    @router.post("/predict")
    def predict(user: Authed, file: UploadFile = File(...)) -> dict[str, Any]:
        """Predict one image now, without storing it (for line systems that need an answer)."""
        return services.predict_upload(read_upload(file, limit), file.filename or "upload", user)

    @router.get("/images/{image_id}")
    def get_image(image_id: int, user: Authed) -> dict[str, Any]:
        return services.image_view(image_id)

    @router.get("/images/{image_id}/mask", response_class=Response)
    def get_mask(
        image_id: int,
        user: Authed,
        source: str = Query("prediction", pattern="^(prediction|correction)$"),
    ) -> Response:
        mask = services.mask(image_id, source)
        return Response(png_bytes(mask.astype("uint8") * 255), media_type="image/png")

    @router.get("/images/{image_id}/types", response_class=Response)
    def get_type_mask(
        image_id: int,
        user: Authed,
        source: str = Query("prediction", pattern="^(prediction|correction)$"),
    ) -> Response:
        """The type mask: an 8-bit grayscale PNG whose pixel values are defect-type ids
        (GET /api/types names them), 0 outside the mask."""
        return Response(
            encode_type_mask(services.type_mask(image_id, source)), media_type="image/png"
        )

    @router.get("/images/{image_id}/heatmap", response_class=Response)
    def get_heatmap(
        image_id: int,
        user: Authed,
        source: str = Query("model", pattern="^(model|anomaly)$"),
    ) -> Response:
        """The supervised model's heatmap, or (`source=anomaly`) the zero-label one."""
        return Response(services.heatmap_png(image_id, source), media_type="image/png")

    @router.post("/images/{image_id}/corrections", status_code=201)
    def post_correction(
        image_id: int,
        user: Authed,
        action: str = Form(...),
        based_on: str = Form(...),
        mask: UploadFile | None = File(None),
        types: UploadFile | None = File(None),
        note: str | None = Form(None),
    ) -> dict[str, Any]:
        """Save a decision; `based_on` is the image's `state` as last read (409 when the
        image changed since, with its current view, so nothing is lost). `types` is the
        mask's type mask: an 8-bit grayscale (or palette-index) PNG of defect-type ids, 0
        where the mask is background (0 inside it: unspecified)."""
        array = type_array = None
        if mask is not None:
            array = decode_mask_upload(read_upload(mask, limit), mask.filename or "mask")
        if types is not None:
            type_array = decode_type_mask(read_upload(types, limit), types.filename or "types")
        try:
            cid = services.save_correction(
                image_id,
                user,
                action=action,
                mask=array,
                based_on=based_on,
                note=note,
                types=type_array,
            )
        except SaveConflict as exc:
            raise ApiError(409, str(exc), {"current": services.image_view(image_id)}) from exc
        return {"id": cid}

    @router.get("/queue/next", response_model=None)
    def queue_next(
        user: Authed, order: str = DEFAULT_STRATEGY, defect_type: str | None = None
    ) -> Response | dict[str, Any]:
        """The next image to review (204: none); `defect_type` keeps to images whose newest
        prediction has a region of that type."""
        image_id = services.next_for_review(user, order, defect_type)
        if image_id is None:
            return Response(status_code=204)
        return services.image_view(image_id)

    @router.get("/types")
    def list_types(user: Authed) -> list[dict[str, Any]]:
        """Every defect type: {id, name, color, key}; ids are the values of type masks."""
        return services.defect_types()

    @router.post("/types", status_code=201)
    def add_type(body: NewDefectType, user: Authed) -> dict[str, Any]:
        """A new defect type (admins; 409 when the name or key is taken)."""
        return services.add_defect_type(user, body.name, color=body.color, key=body.key)

    @router.patch("/types/{type_id}")
    def change_type(type_id: int, body: DefectTypeChange, user: Authed) -> dict[str, Any]:
        """Rename, recolour or re-key a defect type (admins)."""
        fields = body.model_dump(include=body.model_fields_set)
        if not fields:
            raise ApiError(422, "nothing to change: give name, color or key")
        if fields.get("name", "") is None or fields.get("color", "") is None:
            raise ApiError(422, "name and color cannot be removed, only changed")
        return services.update_defect_type(user, type_id, **fields)

    @router.get("/models")
    def list_models(user: Authed) -> list[dict[str, Any]]:
        return [version_view(v) for v in services.model_versions()]

    @router.post("/models/{version_id}/activate")
    def activate(version_id: int, user: Authed) -> dict[str, Any]:
        changed = services.activate(version_id, user)
        return {"id": version_id, "status": "active", "changed": changed}

    @router.get("/promotions")
    def list_promotions(user: Authed) -> list[dict[str, Any]]:
        return [promotion_view(p) for p in services.promotions()]

    @router.post("/training-runs", status_code=202)
    def start_training(user: Authed) -> dict[str, Any]:
        return {"id": services.request_training(user, trigger=f"api:{user.name}")}

    @router.post("/training-runs/{run_id}/cancel")
    def cancel_training(run_id: int, user: Authed) -> dict[str, Any]:
        run, cancelled = services.cancel_training(user, run_id)
        return {"id": run_id, "cancelled": cancelled, "status": run.status.value}

    @router.get("/training-runs/{run_id}")
    def get_run(run_id: int, user: Authed) -> dict[str, Any]:
        return run_view(services.training_run(run_id))

    return router


def install_error_handlers(app: Any) -> None:
    """JSON error bodies for every known error type, plus validation errors."""
    from fastapi.exceptions import RequestValidationError

    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    async def handle_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(
            {"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422
        )

    app.add_exception_handler(RequestValidationError, handle_validation)
    for cls in [ApiError] + [c for c, _ in ERROR_STATUS]:
        app.add_exception_handler(cls, handle)
