"""Retry policy, error classification and the credentials block of the Drive source (no network)."""

from __future__ import annotations

import json
import random

import httplib2
import pytest
from googleapiclient.errors import HttpError
from prefect.blocks.core import Block
from prefect.testing.standard_test_suites import BlockStandardTestSuite

from blocks.gdrive import GoogleDriveCredentials
from flows.common.retry import RetryPolicy
from flows.rag.sources.base import KnownDocument
from flows.rag.sources.gdrive_client import (
    DriveApiError,
    DriveAuthError,
    api_base,
    call_with_retry,
)
from flows.rag.sources.gdrive_refs import needs_revision, skip_of, to_ref, version_of
from flows.rag.sources.gdrive_tree import KIND_FOLDER_SHORTCUT, Node, Tree


def http_error(status: int, reason: str | None = None, retry_after: str | None = None) -> HttpError:
    headers = {"status": str(status)}
    if retry_after:
        headers["retry-after"] = retry_after
    body = {"error": {"code": status, "message": "msg", "errors": [{"reason": reason, "message": "msg"}]}}
    return HttpError(httplib2.Response(headers), json.dumps(body).encode())


def failing(errors: list[Exception]):
    calls = []

    def fn() -> str:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return "ok"

    return fn, calls


@pytest.mark.parametrize(
    ("status", "reason"),
    [(429, None), (403, "userRateLimitExceeded"), (403, "rateLimitExceeded"), (503, None)],
)
def test_quota_and_server_errors_are_retried(status: int, reason: str | None) -> None:
    sleeps: list[float] = []
    fn, calls = failing([http_error(status, reason), http_error(status, reason)])
    assert call_with_retry(fn, RetryPolicy(sleep=sleeps.append), "files.list") == "ok"
    assert len(calls) == 3 and len(sleeps) == 2


def test_retry_after_is_honoured_and_backoff_is_truncated() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(sleep=sleeps.append, rng=random.Random(1), base_s=1, cap_s=8)
    fn, _ = failing([http_error(429, retry_after="30")] + [http_error(503) for _ in range(6)])
    assert call_with_retry(fn, policy, "x") == "ok"
    assert sleeps[0] >= 30
    assert all(0 <= s <= 8 for s in sleeps[1:])
    assert [policy.delay(n, None) <= min(8, 2**n) for n in range(10)] == [True] * 10


def test_give_up_after_max_attempts_with_the_reason() -> None:
    fn, calls = failing([http_error(503, "backendError") for _ in range(10)])
    with pytest.raises(DriveApiError, match=r"HTTP 503 \(backendError"):
        call_with_retry(fn, RetryPolicy(max_attempts=3, sleep=lambda s: None), "files.list")
    assert len(calls) == 3


@pytest.mark.parametrize(("status", "reason"), [(404, "notFound"), (403, "insufficientFilePermissions")])
def test_not_found_and_other_forbidden_fail_at_once(status: int, reason: str) -> None:
    fn, calls = failing([http_error(status, reason)])
    with pytest.raises(DriveApiError) as caught:
        call_with_retry(fn, RetryPolicy(sleep=lambda s: None), "files.get f1")
    assert len(calls) == 1 and caught.value.status == status and caught.value.reason == reason


def test_unauthorized_fails_the_run() -> None:
    fn, _ = failing([http_error(401, "authError")])
    with pytest.raises(DriveAuthError, match="HTTP 401"):
        call_with_retry(fn, RetryPolicy(sleep=lambda s: None), "changes.list")


def test_api_base_accepts_host_or_full_base() -> None:
    assert api_base("http://127.0.0.1:9/") == "http://127.0.0.1:9/drive/v3/"
    assert api_base("http://127.0.0.1:9/drive/v3") == "http://127.0.0.1:9/drive/v3/"
    assert api_base(None) is None


def test_versions_and_skip_reasons() -> None:
    assert version_of({"mimeType": "application/pdf", "md5Checksum": "abc"}) == "md5:abc"
    assert version_of({"mimeType": "application/pdf", "headRevisionId": "r9"}) == "rev:r9"
    day1, day2 = "2026-01-01T00:00:00.000Z", "2026-01-02T00:00:00.000Z"
    doc = {"mimeType": "application/vnd.google-apps.document", "version": "12", "modifiedTime": day2}
    assert version_of(doc) == f"m:{day2}"  # Drive's version moves on renames and sharing too: not a content version
    known = KnownDocument("v11", None, None, modified=day1)
    assert needs_revision(doc, known) and not needs_revision(doc, None)
    assert version_of(doc, known, revised=day1) == "v11"  # renamed: the head revision is no newer than the index
    assert version_of(doc, known, revised=day2) == f"m:{day2}"  # edited since
    assert version_of(doc, known) == f"m:{day2}"  # its revisions could not be read: modifiedTime decides
    untouched = KnownDocument("v11", None, None, modified=day2)  # a sharing change leaves modifiedTime as it was
    assert not needs_revision(doc, untouched) and version_of(doc, untouched) == "v11"
    allow = {"application/pdf"}
    assert skip_of({"mimeType": "application/pdf", "name": "a.pdf", "size": "10"}, allow, 100) is None
    assert "limit" in (skip_of({"mimeType": "application/pdf", "name": "a.pdf", "size": "1000"}, allow, 100) or "")
    ref = to_ref({"id": "x", "name": "S", "mimeType": "application/vnd.google-apps.spreadsheet"}, "R/S", allow, 1)
    assert ref.parse_as == "S.xlsx" and "allow-list" in (ref.skip_reason or "")
    bare = to_ref({"id": "p", "name": "Q3 report", "mimeType": "application/pdf", "size": "9"}, "R", allow, 100)
    assert (bare.parse_name, bare.skip_reason) == ("Q3 report.pdf", None)
    named = to_ref({"id": "p", "name": "q3.PDF", "mimeType": "application/pdf", "size": "9"}, "R", allow, 100)
    assert named.parse_name is None and named.parse_as == "q3.PDF"


def test_scope_paths_follow_folder_shortcuts_once() -> None:
    tree = Tree({"root": "Root"})
    tree.put("a", Node("root", "A"))
    tree.put("s1", Node("a", "to X", KIND_FOLDER_SHORTCUT, "x"))
    tree.put("s2", Node("x", "to root", KIND_FOLDER_SHORTCUT, "root"))  # cycle
    tree.put("y", Node("x", "Y"))
    tree.put("z", Node("outside", "Z"))
    assert tree.scope_paths() == {"root": "Root", "a": "Root/A", "x": "Root/A/to X", "y": "Root/A/to X/Y"}


def test_credentials_block_keeps_secrets_out_of_repr() -> None:
    block = GoogleDriveCredentials(
        authorized_user_info={"client_id": "id", "client_secret": "s3cr3t", "refresh_token": "rt-s3cr3t"}
    )
    assert "s3cr3t" not in repr(block) and "s3cr3t" not in str(block.model_dump())
    assert block.get_credentials().refresh_token == "rt-s3cr3t"
    with pytest.raises(ValueError, match="exactly one"):
        GoogleDriveCredentials()
    with pytest.raises(ValueError, match="needs a service account"):
        GoogleDriveCredentials(authorized_user_info={"refresh_token": "x"}, subject="a@b.c")


class TestGoogleDriveCredentialsBlock(BlockStandardTestSuite):
    @pytest.fixture
    def block(self) -> type[Block]:
        return GoogleDriveCredentials

    def test_has_a_valid_image(self, block: type[Block]) -> None:  # the upstream test downloads it
        assert str(block._logo_url).startswith("https://")


def test_rag_sync_form_offers_the_drive_source() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.rag.sync import rag_sync

    schema = parameter_schema(rag_sync).model_dump()
    assert schema["properties"]["source"]["discriminator"]["mapping"]["gdrive"].endswith("GoogleDriveSpec")
    fields = schema["definitions"]["GoogleDriveSpec"]["properties"]
    assert {"folder_ids", "drive_ids", "credentials_block"} <= set(fields)


def test_service_account_key_with_domain_wide_delegation() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "client_email": "rag@proj.iam.gserviceaccount.com",
        "private_key": pem,
        "private_key_id": "k1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    block = GoogleDriveCredentials(service_account_info=info, subject="alice@example.com")
    assert "PRIVATE KEY" not in repr(block)
    creds = block.get_credentials()
    assert creds.service_account_email == info["client_email"]
    assert creds._subject == "alice@example.com"
    assert creds._scopes == ["https://www.googleapis.com/auth/drive.readonly"]
