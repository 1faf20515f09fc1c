"""FastAPI dependencies shared by the routes: the authenticated caller and the services on app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from bridge.domain.auth import AuthContext
from bridge.errors import AuthorizationFailed, GenericForbidden


def current_user(request: Request) -> AuthContext:
    auth: AuthContext | None = getattr(request.state, "auth", None)
    if auth is None:  # the middleware authenticates every route but GET /; this is a second lock
        raise AuthorizationFailed("authentication required")
    return auth


def current_superadmin(request: Request) -> AuthContext:
    auth = current_user(request)
    if not auth.is_superadmin:
        raise GenericForbidden("superadmin privilege required")
    return auth


CurrentUser = Annotated[AuthContext, Depends(current_user)]
SuperAdmin = Annotated[AuthContext, Depends(current_superadmin)]
