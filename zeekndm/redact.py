"""Keeping secrets out of messages: URL redaction, secret validation, text scrubbing.

Why one module: secrets reach zeekndm from three places (environment variables, secret
files, and - refused - URLs), and leave it through one channel only, messages (log lines,
error lines, the dead-letter file). Every message built from a URL or from an exception's
text goes through here first, so a password can never be printed because a library
chose to quote a header or a URL in its error.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from zeekndm.errors import ZeekNDMError

REDACTED = "[redacted]"

# Authorization schemes a library may quote in an error ("Invalid header value b'ApiKey ...'")
_AUTH_VALUE = re.compile(r"\b(ApiKey|Basic|Bearer)\s+[A-Za-z0-9+/=._~:-]+", re.IGNORECASE)
# user:password@ (or user@) in anything that looks like a URL
_USERINFO = re.compile(r"(?<=//)[^/@\s]+@")


def has_userinfo(url: str) -> bool:
    """True when the URL carries `user[:password]@` before the host."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "@" in url
    return bool(parts.username or parts.password or "@" in parts.netloc)


def redact_url(url: str) -> str:
    """The URL without userinfo and without the values of its query string."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub(f"{REDACTED}@", url)
    netloc = parts.netloc.rpartition("@")[2]
    if parts.netloc != netloc:
        netloc = f"{REDACTED}@{netloc}"
    query = "&".join(
        f"{kv.partition('=')[0]}={REDACTED}" if "=" in kv else kv
        for kv in parts.query.split("&")
        if kv
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def check_secret(value: str, where: str, *, header_token: bool) -> str:
    """Validate a secret as loaded; returns it without surrounding whitespace.

    A file usually ends with a newline (stripped); any other line break or control
    character means the file holds something else than one secret (two keys, a
    pasted block), and would later make the HTTP library refuse the header and quote
    it whole in its error. API keys and tokens go into a header as they are, so they
    must be printable ASCII without spaces. The message names the place, never the value.
    """
    secret = value.strip()
    if not secret:
        raise ValueError(f"{where} is empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in secret):
        raise ValueError(
            f"{where} contains a line break or a control character: it must hold the "
            "secret alone, on one line"
        )
    if header_token and (
        any(c.isspace() for c in secret) or not secret.isascii() or not secret.isprintable()
    ):
        raise ValueError(f"{where} must be printable ASCII without spaces (an API key or token)")
    return secret


def load_secret(
    env_name: str | None,
    file_name: str | None,
    key: str,
    *,
    header_token: bool,
    error: type[ZeekNDMError] = ZeekNDMError,
) -> str | None:
    """The secret in environment variable `env_name` or in file `file_name` (None when
    neither is set), validated by `check_secret`.

    `key` is the option's path without its suffix (`output.elasticsearch.password`,
    `inputs[0].password`): a problem is raised as `error` naming `<key>_env` or
    `<key>_file` and the file, never the secret. Every output and input that takes a
    secret loads it here, so they refuse the same mistakes with the same words."""
    if env_name:
        where = f"{key}_env"
        value = os.environ.get(env_name)
        if not value:
            raise error(f"environment variable {env_name} is not set", key=where)
        try:
            return check_secret(
                value, f"environment variable {env_name}", header_token=header_token
            )
        except ValueError as exc:
            raise error(str(exc), key=where) from None
    if file_name:
        where = f"{key}_file"
        try:
            value = Path(file_name).read_text(encoding="utf-8")
        except OSError as exc:
            raise error(
                f"cannot read the secret file: {exc.strerror}", file=file_name, key=where
            ) from None
        except UnicodeDecodeError:
            raise error("the secret file is not UTF-8 text", file=file_name, key=where) from None
        try:
            return check_secret(value, "the secret file", header_token=header_token)
        except ValueError as exc:
            raise error(str(exc), file=file_name, key=where) from None
    return None


class Redactor:
    """Scrubs known secrets (and the header forms they take) out of any text."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        forms: set[str] = set()
        for s in secrets:
            if s and len(s) >= 4:
                forms.add(s)
                forms.add(base64.b64encode(s.encode()).decode())
        self._forms = sorted(forms, key=len, reverse=True)

    @classmethod
    def for_basic(cls, user: str | None, password: str | None, *others: str | None) -> Redactor:
        secrets = [s for s in (password, *others) if s]
        if user and password:
            secrets.append(f"{user}:{password}")
        return cls(tuple(secrets))

    def __call__(self, text: object) -> str:
        out = str(text)
        for form in self._forms:
            out = out.replace(form, REDACTED)
        out = _AUTH_VALUE.sub(lambda m: f"{m.group(1)} {REDACTED}", out)
        return _USERINFO.sub(f"{REDACTED}@", out)
