"""Request and response schemas shared by the account views (pydantic, rendered into the OpenAPI spec)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Input models refuse unknown fields."""

    model_config = ConfigDict(extra="forbid")


class ErrorItem(BaseModel):
    code: str
    title: str
    detail: str


class ErrorBody(BaseModel):
    """The one error shape."""

    errors: list[ErrorItem]


class UserOut(BaseModel):
    id: int
    email: str
    role: str
    created_at: str
    disabled: bool


class MeOut(BaseModel):
    user: UserOut
    key_id: str | None = None


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    created_at: str
    last_used_at: str | None = None
    revoked_at: str | None = None
    user_id: int


class KeyCreatedOut(KeyOut):
    key: str = Field(description="The secret: shown once, store it now.")


class KeyListOut(BaseModel):
    keys: list[KeyOut]


class KeyIn(Strict):
    name: str = Field("", max_length=100)


class PasswordChangeIn(Strict):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class EmailChangeIn(Strict):
    password: str = Field(max_length=1024)
    email: str = Field(max_length=254)


class ResetRequestIn(Strict):
    email: str = Field(max_length=254)


class ResetConfirmIn(Strict):
    token: str = Field(max_length=200)
    new_password: str = Field(max_length=1024)


class MessageOut(BaseModel):
    message: str


class UserIn(Strict):
    email: str = Field(max_length=254)
    password: str = Field(max_length=1024)
    role: str = Field("member", pattern="^(admin|member)$")


class UserPatchIn(Strict):
    role: str = Field(pattern="^(admin|member)$")


class UserListOut(BaseModel):
    users: list[UserOut]


class ResetLinkOut(BaseModel):
    url: str
    expires_minutes: int
