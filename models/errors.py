"""The vision engine's domain errors: each carries a remove.bg-style code, a title, an HTTP status and a detail."""

from __future__ import annotations

from core.errors import DomainError


class ModelError(DomainError):
    """Base of every models/ error; the server renders it as {"errors": [{code, title, detail}]}."""

    code, title, status = "model_error", "Model error", 500


# --- model files ---------------------------------------------------------------------------------------------
class UnknownModel(ModelError):
    code, title, status = "unknown_model", "Unknown model", 400


class ModelMissing(ModelError):
    code, title, status = "model_unavailable", "Model not installed", 503


class ModelCorrupt(ModelError):
    code, title, status = "model_corrupt", "Model file failed its checksum", 503


class ChecksumMismatch(ModelError):
    """A file offered to `install` is not the one the manifest names."""

    code, title, status = "model_checksum_mismatch", "File does not match the model's checksum", 400


class ModelNotFetchable(ModelError):
    code, title, status = "model_not_fetchable", "Model is installed by hand", 400


class FetchFailed(ModelError):
    code, title, status = "model_fetch_failed", "Model download failed", 502


# --- running a model -----------------------------------------------------------------------------------------
class DeviceUnavailable(ModelError):
    code, title, status = "device_unavailable", "Requested device is not available", 503


class InvalidKind(ModelError):
    code, title, status = "invalid_type", "Unsupported foreground type", 400


class InvalidPrompt(ModelError):
    code, title, status = "invalid_prompt", "Invalid segmentation prompt", 400


class InferenceFailed(ModelError):
    code, title, status = "inference_failed", "Segmentation failed", 500
