"""Typed errors. Adapters turn library errors into these; the HTTP layer and the CLI map them.

    CompanionError                  (500 internal_error)
    ├── ConfigError                 (400 config_error)     bad setting, file or preset
    ├── InputError                  (422 invalid_input)    a request field is wrong
    │   └── PayloadTooLarge         (413 too_large)        a message or body over its limit
    ├── NotFound                    (404 not_found)        no such session / user / message
    ├── ModelError                  (503 model_unavailable)
    │   ├── UnknownModelSize        (422 unknown_model_size)
    │   ├── ModelNotInstalled       (503 model_not_installed)
    │   ├── ModelLoadError          (503 model_load_failed) missing or corrupt GGUF
    │   └── ModelDown               (503 model_unavailable) the engine stopped or was closed
    ├── StorageError                (503 storage_unavailable) database read-only, locked, I/O
    │   ├── StorageFull             (507 storage_full)     disk or database size limit full
    │   └── DatabaseUnavailable     (503 database_unavailable) PostgreSQL unreachable; Retry-After
    ├── GenerationError             (500 generation_failed)
    │   └── DeadlineExceeded        (504 deadline_exceeded) request_timeout_s passed
    └── Overloaded                  (429 overloaded)       queue full; retry later
"""

from __future__ import annotations


class CompanionError(Exception):
    """Base of every error companion raises on purpose."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": _printable(self.message)}
        if self.field is not None:
            body["field"] = _printable(self.field)
        return body


def _printable(text: str) -> str:
    """Text safe to send as UTF-8: a lone surrogate from the input becomes a `\\udXXX` escape."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ConfigError(CompanionError):
    status_code = 400
    code = "config_error"


class InputError(CompanionError):
    status_code = 422
    code = "invalid_input"


class PayloadTooLarge(InputError):
    status_code = 413
    code = "too_large"


class NotFound(CompanionError):
    status_code = 404
    code = "not_found"


class ModelError(CompanionError):
    status_code = 503
    code = "model_unavailable"


class UnknownModelSize(ModelError):
    status_code = 422
    code = "unknown_model_size"


class ModelNotInstalled(ModelError):
    code = "model_not_installed"


class ModelLoadError(ModelError):
    code = "model_load_failed"


class ModelDown(ModelError):
    """The engine cannot take requests: its decode thread stopped, or it was closed."""

    code = "model_unavailable"


class StorageError(CompanionError):
    """The database refused a read or write (read-only, locked, I/O error); nothing was lost."""

    status_code = 503
    code = "storage_unavailable"


class StorageFull(StorageError):
    """The disk (or the database's size limit) is full; the change was not saved."""

    status_code = 507
    code = "storage_full"


class DatabaseUnavailable(StorageError):
    """The database server cannot be reached; nothing was written. Retry after a moment."""

    status_code = 503
    code = "database_unavailable"
    retry_after_s = 2


class GenerationError(CompanionError):
    code = "generation_failed"


class Overloaded(CompanionError):
    status_code = 429
    code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(GenerationError):
    status_code = 504
    code = "deadline_exceeded"
