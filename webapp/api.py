"""REST API under /api: bearer-token auth, JSON errors with a message.

No `from __future__ import annotations` here: FastAPI resolves the dependency annotations
of the route functions, which are defined inside `build_router`.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from storage.errors import BlobIntegrityError, NotFoundError, StorageError
from storage.schema import Role, User
from webapp.ingest import IngestError
from webapp.services import PermissionDenied, Services, decode_mask_upload, png_bytes


class ApiError(Exception):
    """An error answered as JSON `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


ERROR_STATUS: list[tuple[type[Exception], int]] = [
    (NotFoundError, 404),
    (PermissionDenied, 403),
    (BlobIntegrityError, 500),
    (IngestError, 422),
    (StorageError, 422),
    (ValueError, 422),
]


def error_response(exc: Exception) -> JSONResponse:
    if isinstance(exc, ApiError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    for cls, status in ERROR_STATUS:
        if isinstance(exc, cls):
            return JSONResponse({"error": str(exc)}, status_code=status)
    return JSONResponse({"error": "internal error"}, status_code=500)


def build_router(services: Services) -> APIRouter:
    """All /api routes, bound to `services`."""
    router = APIRouter(prefix="/api")

    def current_user(authorization: Annotated[str | None, Header()] = None) -> User:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)")
        user = services.accounts.user_for_token(authorization.split(None, 1)[1].strip())
        if user is None:
            raise ApiError(401, "unknown or revoked token")
        return user

    def admin(user: Annotated[User, Depends(current_user)]) -> User:
        if user.role is not Role.admin:
            raise ApiError(403, f"user {user.name!r} is not an admin")
        return user

    Authed = Annotated[User, Depends(current_user)]

    @router.get("/health")
    def health() -> dict[str, Any]:
        served = services.models.current
        return {
            "status": "ok" if served is not None else "no_model",
            "active_model_version": None if served is None else served.version_id,
            "queue_length": services.repo.counts()["pending"],
        }

    @router.post("/images", status_code=201)
    async def upload_image(user: Authed, file: UploadFile = File(...)) -> dict[str, Any]:
        data = await file.read()
        result = services.ingest(data, file.filename or "upload", source=f"api:{user.name}")
        return {"id": result.id, "sha256": result.sha256, "duplicate": result.duplicate}

    @router.post("/predict")
    async def predict(user: Authed, file: UploadFile = File(...)) -> dict[str, Any]:
        """Predict one image now, without storing it (for line systems that need an answer)."""
        data = await file.read()
        return services.predict_upload(data, file.filename or "upload")

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

    @router.get("/images/{image_id}/heatmap", response_class=Response)
    def get_heatmap(image_id: int, user: Authed) -> Response:
        return Response(services.heatmap_png(image_id), media_type="image/png")

    @router.post("/images/{image_id}/corrections", status_code=201)
    async def post_correction(
        image_id: int,
        user: Authed,
        action: str = Form(...),
        mask: UploadFile | None = File(None),
        note: str | None = Form(None),
    ) -> dict[str, Any]:
        array = None
        if mask is not None:
            array = decode_mask_upload(await mask.read(), mask.filename or "mask")
        cid = services.save_correction(image_id, user, action=action, mask=array, note=note)
        return {"id": cid}

    @router.get("/queue/next", response_model=None)
    def queue_next(user: Authed, order: str = "uncertainty") -> Response | dict[str, Any]:
        image = services.repo.next_for_review(
            user.name, order=order, lease_seconds=services.settings.lease_seconds
        )
        if image is None:
            return Response(status_code=204)
        return services.image_view(image.id)

    @router.get("/models")
    def list_models(user: Authed) -> list[dict[str, Any]]:
        return [
            {
                "id": v.id,
                "status": v.status.value,
                "encoder_id": v.encoder_id,
                "metrics": v.metrics,
                "parent_id": v.parent_id,
                "note": v.note,
                "created_at": v.created_at.isoformat(),
                "activated_at": v.activated_at.isoformat() if v.activated_at else None,
            }
            for v in services.repo.model_versions()
        ]

    @router.post("/models/{version_id}/activate")
    def activate(version_id: int, user: Annotated[User, Depends(admin)]) -> dict[str, Any]:
        versions = {v.id: v for v in services.repo.model_versions()}
        if version_id not in versions:
            raise NotFoundError(f"no model version with id {version_id}")
        services.models.load(versions[version_id].checkpoint_path, version_id)
        services.repo.activate(version_id)
        return {"id": version_id, "status": "active"}

    @router.post("/training-runs", status_code=202)
    def start_training(user: Annotated[User, Depends(admin)]) -> dict[str, Any]:
        return {"id": services.request_training(user, trigger=f"api:{user.name}")}

    @router.post("/training-runs/{run_id}/cancel")
    def cancel_training(run_id: int, user: Annotated[User, Depends(admin)]) -> dict[str, Any]:
        cancelled = services.repo.cancel_training_run(run_id)
        return {
            "id": run_id,
            "cancelled": cancelled,
            "status": services.repo.get_training_run(run_id).status.value,
        }

    @router.get("/training-runs/{run_id}")
    def get_run(run_id: int, user: Authed) -> dict[str, Any]:
        return run_view(services.repo.get_training_run(run_id))

    return router


def run_view(run: Any) -> dict[str, Any]:
    """A training run as JSON."""

    def iso(t: Any) -> str | None:
        return t.isoformat() if t is not None else None

    return {
        "id": run.id,
        "status": run.status.value,
        "trigger": run.trigger,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "corrections_used": run.corrections_used,
        "correction_watermark": run.correction_watermark,
        "metrics": run.metrics,
        "model_version": run.model_version_id,
        "log_tail": run.log_tail,
        "error": run.error,
    }


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
