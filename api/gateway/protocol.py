"""The OpenAI wire protocol: request models (unknown fields pass through) and the error shape."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class OpenAIError(Exception):
    """An error the client sees as ``{"error": {...}}`` with OpenAI's status code and type."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> bytes:
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        )


def invalid(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, "invalid_request_error", param=param, code=code)


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        "invalid_request_error",
        param="model",
        code="model_not_found",
    )


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class StreamOptions(_Base):
    include_usage: bool | None = None


class ChatMessage(_Base):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class _Sampling(_Base):
    model: str = Field(min_length=1, max_length=200)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    user: str | None = None


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def max_output_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def prompt_text(self) -> str:
        parts: list[str] = []
        for m in self.messages:
            if isinstance(m.content, str):
                parts.append(m.content)
            elif m.content:
                parts.extend(str(p.get("text", "")) for p in m.content if isinstance(p, dict))
        return "\n".join(parts)


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]]

    def max_output_tokens(self) -> int | None:
        return self.max_tokens if self.max_tokens is not None else 16  # OpenAI's default for completions

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n".join(p for p in self.prompt if isinstance(p, str))


class EmbeddingRequest(_Base):
    model: str = Field(min_length=1, max_length=200)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, v: Any) -> Any:
        if v == "" or v == []:
            raise ValueError("input must not be empty")
        return v

    def prompt_text(self) -> str:
        if isinstance(self.input, str):
            return self.input
        return "\n".join(p for p in self.input if isinstance(p, str))

    def max_output_tokens(self) -> int | None:
        return 0


Request = ChatCompletionRequest | CompletionRequest | EmbeddingRequest


def parse(model_cls: type[BaseModel], body: bytes) -> Any:
    """Validate a JSON body, mapping every failure to OpenAI's 400."""
    if not body:
        raise invalid("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        return model_cls.model_validate_json(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        if err["type"] == "json_invalid":
            raise invalid(
                "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
                "HTTP library correctly. The OpenAI API expects a JSON payload.)",
                code="invalid_json",
            ) from None
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "missing":
            raise invalid(
                f"Missing required parameter: '{loc}'.", param=loc, code="missing_required_parameter"
            ) from None
        raise invalid(f"Invalid value for '{loc}': {err['msg']}.", param=loc, code="invalid_value") from None
