"""SigV4 checks for the emulator: by default any credentials pass (as boto3 needs some to
sign); with a key pair configured, a request's signature is recomputed with botocore's own
signer over what was received and compared, as AWS does.

Errors carry the code AWS answers with, so botocore raises a ClientError whose
``response["Error"]["Code"]`` a notebook can test: UnrecognizedClientException (unknown key),
InvalidSignatureException (wrong secret, altered request, a date more than 15 min off),
MissingAuthenticationTokenException (no signature), IncompleteSignatureException.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re

from mmesim.errors import MmesimError

MAX_SKEW_S = 15 * 60          # AWS refuses signatures dated more than 15 minutes off
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
_AUTH = re.compile(r"AWS4-HMAC-SHA256\s+Credential=(?P<cred>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
                   r"\s*Signature=(?P<sig>[0-9a-f]{64})\s*$")


class AuthError(MmesimError):
    """A request refused for its signature; ``code`` and ``status`` are what AWS answers."""

    def __init__(self, code: str, message: str, status: int = 403):
        super().__init__(message)
        self.code, self.status, self.message = code, status, message

    def body(self) -> dict:
        """The JSON error body both botocore's json and rest-json parsers read."""
        return {"__type": self.code, "message": self.message}

    def headers(self) -> dict[str, str]:
        return {"x-amzn-ErrorType": f"{self.code}:", "Content-Type": "application/x-amz-json-1.1"}


def verify_sigv4(method: str, url: str, headers, body: bytes, keys: dict[str, str], *,
                 now: dt.datetime | None = None, max_skew_s: float = MAX_SKEW_S) -> str:
    """Check the SigV4 ``Authorization`` of a received request; return its access key id.

    ``url`` is the URL as received (scheme, Host and the raw, still percent-encoded path and
    query: ``request_url(request)`` for aiohttp); ``headers`` any mapping of the received
    headers (aiohttp's request.headers or a plain dict: names are matched ignoring case);
    ``keys`` maps access key id -> secret. Raises AuthError."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    seen: dict[str, list[str]] = {}
    for name, value in headers.items():          # a multidict yields a repeated header once per value
        seen.setdefault(name.lower(), []).append(value)
    headers = {name: ",".join(values) for name, values in seen.items()}
    header = headers.get("authorization")
    if not header:
        raise AuthError("MissingAuthenticationTokenException", "Missing Authentication Token")
    m = _AUTH.match(header.strip())
    if not m:
        raise AuthError("IncompleteSignatureException",
                        "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                        "(AWS4-HMAC-SHA256)", 400)
    scope = m["cred"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise AuthError("IncompleteSignatureException", f"malformed credential scope {m['cred']!r}", 400)
    access_key, day, region, service, _ = scope
    secret = keys.get(access_key)
    if secret is None:
        raise AuthError("UnrecognizedClientException", "The security token included in the request is invalid.")
    stamp = headers.get("x-amz-date", "")
    try:
        when = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise AuthError("IncompleteSignatureException", f"X-Amz-Date {stamp!r} is missing or not yyyymmddThhmmssZ",
                        400) from None
    now = now or dt.datetime.now(dt.timezone.utc)
    skew = dt.timedelta(seconds=max_skew_s)
    if now - when > skew:
        raise AuthError("InvalidSignatureException",
                        f"Signature expired: {stamp} is now earlier than {now - skew:%Y%m%dT%H%M%SZ} "
                        f"({now:%Y%m%dT%H%M%SZ} - {max_skew_s / 60:g} min.)")
    if when - now > skew:                 # AWS's words for a request dated in the future
        raise AuthError("InvalidSignatureException",
                        f"Signature not yet current: {stamp} is still later than {now + skew:%Y%m%dT%H%M%SZ} "
                        f"({now:%Y%m%dT%H%M%SZ} + {max_skew_s / 60:g} min.)")
    if day != stamp[:8]:
        raise AuthError("InvalidSignatureException", f"credential date {day} does not match X-Amz-Date {stamp}")
    signed = m["signed"].split(";")
    if "host" not in signed:
        raise AuthError("InvalidSignatureException", "the Host header must be signed")
    content_sha = headers.get("x-amz-content-sha256")
    if content_sha is not None and content_sha != UNSIGNED_PAYLOAD \
            and not hmac.compare_digest(content_sha, hashlib.sha256(body).hexdigest()):
        raise AuthError("InvalidSignatureException", "X-Amz-Content-SHA256 does not match the body")

    missing = [name for name in signed if name not in headers]
    if missing:
        raise AuthError("InvalidSignatureException", f"signed header(s) {', '.join(missing)} missing from the request")
    request = AWSRequest(method=method, url=url, headers={name: headers[name] for name in signed}, data=body)
    request.context["timestamp"] = stamp
    signer = SigV4Auth(Credentials(access_key, secret), service, region)
    if sorted(signer.headers_to_sign(request)) != sorted(signed):
        raise AuthError("InvalidSignatureException", "SignedHeaders lists headers that cannot be signed")
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, m["sig"]):
        raise AuthError("InvalidSignatureException",
                        "The request signature we calculated does not match the signature you provided. "
                        "Check your AWS Secret Access Key and signing method.")
    return access_key


def request_url(request) -> str:
    """The URL an aiohttp request was sent to, path and query still percent-encoded."""
    return f"{request.scheme}://{request.host}{request.raw_path}"


def sigv4_middleware(keys: dict[str, str]):
    """An aiohttp middleware refusing requests not signed with one of ``keys`` (none: all pass)."""
    from aiohttp import web

    @web.middleware
    async def check(request, handler):
        if keys:
            body = await request.read()
            try:
                verify_sigv4(request.method, request_url(request), request.headers, body, keys)
            except AuthError as exc:
                return web.Response(body=json.dumps(exc.body()).encode(), status=exc.status, headers=exc.headers())
        return await handler(request)
    return check
