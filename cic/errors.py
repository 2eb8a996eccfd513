"""The platform's exception tree. Services raise these; each boundary (HTTP, CLI) maps them once.

CICError
├── InvalidRequest        400  the request is malformed
├── AuthenticationError   401  no or bad credentials
├── PermissionDenied      403  known caller, not allowed
├── NotFound              404  (also used for objects of other orgs, so their existence never leaks)
├── Conflict              409  duplicate or state clash
├── Gone                  410  the object existed and is gone for good (a deregistered node)
├── ValidationFailed      422  well-formed but unacceptable values (unknown region, weak password, ...)
└── DependencyUnavailable 503  the database or Redis cannot be reached
"""

from __future__ import annotations


class CICError(Exception):
    status_code = 500
    error_type = "api_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code


class InvalidRequest(CICError):
    status_code = 400
    error_type = "invalid_request_error"


class AuthenticationError(CICError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_credentials"


class PermissionDenied(CICError):
    status_code = 403
    error_type = "permission_error"
    default_code = "forbidden"


class NotFound(CICError):
    status_code = 404
    error_type = "not_found_error"
    default_code = "not_found"


class Conflict(CICError):
    status_code = 409
    error_type = "conflict_error"
    default_code = "conflict"


class Gone(CICError):
    status_code = 410
    error_type = "gone_error"
    default_code = "gone"


class ValidationFailed(CICError):
    status_code = 422
    error_type = "invalid_request_error"
    default_code = "validation_failed"


class DependencyUnavailable(CICError):
    status_code = 503
    error_type = "service_unavailable"
    default_code = "dependency_unavailable"
