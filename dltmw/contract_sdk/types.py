"""Typed arguments and results: the wire encoding of each annotation, both ways.

Arguments stay `repeated bytes` on the wire (`ContractInvocation.args`); a contract function's
annotations say how each is read, and its return annotation how the result is written:

  bytes            as is
  str              UTF-8
  int              ASCII decimal, optional leading "-", no spaces or "+" ("42", "-7")
  bool             "true" or "false"
  Decimal          ASCII decimal as Python's Decimal reads it, finite ("12.50", "-3")
  dataclass        a JSON object (UTF-8) with exactly the dataclass's fields, each converted
                   by its own annotation from JSON: int (a JSON integer, not a bool), str,
                   bool, Decimal (a JSON string), bytes (a JSON string, standard base64),
                   nested dataclasses, list[T], dict[str, T]
  list[T], dict[str, T]
                   JSON array / object, elements converted as above
  None (result)    empty

Results are written the same way; JSON is canonical (sorted keys, no spaces, UTF-8), so every
endorser produces the same bytes. `Annotated[str, Text(1, 128)]` adds a length check and
`Label("from")` the name a refusal uses (default: the parameter name, "_" read as " ").

A mismatch is the caller's fault: `ContractError` status 400 naming the argument,
"argument 2 (amount) is not an integer: 'ten'" or "missing argument 2: amount".
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import decimal
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, get_args, get_origin


@dataclass(frozen=True)
class Text:
    """A str argument of `min_chars..max_chars` characters."""

    min_chars: int = 0
    max_chars: int = 1 << 20


@dataclass(frozen=True)
class Label:
    """The name refusals use for an argument."""

    text: str


class ConversionError(ValueError):
    """A value does not fit its annotation (becomes a 400 naming the argument)."""


def _plain(annotation: object) -> tuple[object, tuple[object, ...]]:
    if get_origin(annotation) is Annotated:
        base, *extras = get_args(annotation)
        return base, tuple(extras)
    return annotation, ()


def label_of(annotation: object, default: str) -> str:
    """The refusal name of a parameter."""
    _, extras = _plain(annotation)
    for extra in extras:
        if isinstance(extra, Label):
            return extra.text
    return default.replace("_", " ")


def _int(text: str) -> int:
    digits = text[1:] if text.startswith("-") else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 4300:
        raise ConversionError(f"is not an integer: {text!r}")
    return int(text)


def _decimal(text: str) -> decimal.Decimal:
    try:
        value = decimal.Decimal(text)
    except decimal.InvalidOperation:
        raise ConversionError(f"is not a decimal number: {text!r}") from None
    if not value.is_finite() or not text.isascii() or text.strip() != text:
        raise ConversionError(f"is not a finite decimal number: {text!r}")
    return value


def _bool(text: str) -> bool:
    if text not in ("true", "false"):
        raise ConversionError(f"is not true or false: {text!r}")
    return text == "true"


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ConversionError("is not UTF-8") from None


def decoder_for(annotation: object) -> Callable[[bytes], object]:
    """The converter of one argument's bytes (ConversionError with the reason if they do not
    fit), worked out once per parameter: annotations are not re-inspected per call."""
    base, extras = _plain(annotation)
    texts = [e for e in extras if isinstance(e, Text)]
    if base is bytes:
        return _same
    if base is str:
        return _text if not texts else partial(_bounded_text, texts)
    if base is int:
        return lambda raw: _int(_text(raw))
    if base is bool:
        return lambda raw: _bool(_text(raw))
    if base is decimal.Decimal:
        return lambda raw: _decimal(_text(raw))
    return lambda raw: from_json(base, _json(_text(raw)))


def decode_arg(annotation: object, raw: bytes) -> object:
    """The value of one argument (see `decoder_for`)."""
    return decoder_for(annotation)(raw)


def _same(raw: bytes) -> bytes:
    return raw


def _bounded_text(texts: list[Text], raw: bytes) -> str:
    value = _text(raw)
    for t in texts:
        if not t.min_chars <= len(value) <= t.max_chars:
            raise ConversionError(f"must be {t.min_chars}..{t.max_chars} characters")
    return value


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ConversionError(f"is not JSON: {exc}") from None


def from_json(annotation: object, value: object) -> object:
    """A JSON value converted by `annotation` (see the module docstring)."""
    base, _ = _plain(annotation)
    origin = get_origin(base)
    if base is Any:
        return value
    if base is bool or base is str:
        if type(value) is not base:
            raise ConversionError(f"expects a JSON {'boolean' if base is bool else 'string'}")
        return value
    if base is int:
        if type(value) is not int:
            raise ConversionError("expects a JSON integer")
        return value
    if base is decimal.Decimal:
        if not isinstance(value, str):
            raise ConversionError("expects a decimal number as a JSON string")
        return _decimal(value)
    if base is bytes:
        if not isinstance(value, str):
            raise ConversionError("expects base64 bytes as a JSON string")
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ConversionError("is not valid base64") from None
    if origin is list or base is list:
        if not isinstance(value, list):
            raise ConversionError("expects a JSON array")
        item = (get_args(base) or (Any,))[0]
        return [from_json(item, v) for v in value]
    if origin is dict or base is dict:
        if not isinstance(value, dict):
            raise ConversionError("expects a JSON object")
        item = (get_args(base) or (str, Any))[1]
        return {k: from_json(item, v) for k, v in value.items()}
    if isinstance(base, type) and dataclasses.is_dataclass(base):
        return _dataclass(base, value)
    raise ConversionError(f"has an unsupported type {base!r}")


def _dataclass(cls: type, value: object) -> object:
    if not isinstance(value, dict):
        raise ConversionError(f"expects a JSON object for {cls.__name__}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ConversionError(f"has unknown fields {unknown}")
    kwargs: dict[str, object] = {}
    for name, f in fields.items():
        if name in value:
            try:
                kwargs[name] = from_json(hints[name], value[name])
            except ConversionError as exc:
                raise ConversionError(f"field {name!r} {exc}") from None
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConversionError(f"lacks field {name!r}")
    return cls(**kwargs)


def to_json(value: object) -> object:
    """A result value as plain JSON data (dataclasses as objects, Decimal as strings)."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    raise ConversionError(f"cannot encode a {type(value).__name__} result")


def encode_result(value: object) -> bytes:
    """Result bytes of a function's return value (see the module docstring)."""
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int | decimal.Decimal):
        return str(value).encode()
    text = json.dumps(to_json(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode()


def check_annotation(annotation: object) -> None:
    """ConversionError unless arguments of this annotation can be decoded."""
    base, _ = _plain(annotation)
    scalars = (bytes, str, int, bool, decimal.Decimal, list, dict)
    if base in scalars or get_origin(base) in (list, dict):
        return
    if isinstance(base, type) and dataclasses.is_dataclass(base):
        return
    raise ConversionError(f"unsupported argument type {base!r}")
