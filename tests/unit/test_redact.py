"""Redaction over every connection-string form psycopg and redis-py accept: random passwords in random shapes,
each checked to be read back by the real client parser, never survive ``redact``."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict
from redis.connection import parse_url

from flows.common.db import Database
from flows.common.errors import ConfigError
from flows.common.redact import MASK, has_password, misread_password, parsed_password, redact

NAME = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
HOST = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5})?", fullmatch=True)
PORT = st.integers(1, 65535)
ANY_PASSWORD = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=24)
# A password written raw (unencoded) in a URL's userinfo: what urllib (redis-py) still reads back whole.
RAW_URL_PASSWORD = st.text(
    st.characters(codec="ascii", min_codepoint=33, max_codepoint=126, exclude_characters="/?#[]"),
    min_size=1,
    max_size=24,
)

# libpq reads a raw query value up to "&", percent-decoding it.
RAW_QUERY_PASSWORD = st.text(
    st.characters(codec="ascii", min_codepoint=33, max_codepoint=126, exclude_characters="&%="), min_size=1, max_size=24
)
RAW_PASSWORDS = {
    "redis-userinfo": RAW_URL_PASSWORD,
    "redis-no-user": RAW_URL_PASSWORD,
    "pg-query-raw": RAW_QUERY_PASSWORD,
}


def kv_quoted(pw: str) -> str:
    return "'" + re.sub(r"(['\\])", r"\\\1", pw) + "'"


def kv_unquoted(pw: str) -> str:
    return re.sub(r"(['\\\s])", r"\\\1", pw)


Shape = Callable[[str, str, str, int], str]  # (password as written, user, host, port) -> connection string
SHAPES: dict[str, tuple[Shape, Callable[[str], str], Callable[[str], str | None]]] = {
    # name: (builder, how the password is written, what the real client reads back)
    "pg-userinfo": (lambda w, u, h, p: f"postgresql://{u}:{w}@{h}:{p}/db", lambda pw: quote(pw, safe=""),
                    lambda d: conninfo_to_dict(d).get("password")),
    "pg-no-user": (lambda w, u, h, p: f"postgres://:{w}@{h}:{p}/db", lambda pw: quote(pw, safe=""),
                   lambda d: conninfo_to_dict(d).get("password")),
    "pg-query": (lambda w, u, h, p: f"postgresql://{u}@{h}:{p}/db?sslmode=disable&password={w}&connect_timeout=3",
                 lambda pw: quote(pw, safe=""), lambda d: conninfo_to_dict(d).get("password")),
    "pg-query-raw": (lambda w, u, h, p: f"postgresql://{h}:{p}/db?password={w}&user={u}", lambda pw: pw,
                     lambda d: conninfo_to_dict(d).get("password")),
    "pg-kv-quoted": (lambda w, u, h, p: f"host={h} port={p} password={w} user={u} dbname=db", kv_quoted,
                     lambda d: conninfo_to_dict(d).get("password")),
    "pg-kv-unquoted": (lambda w, u, h, p: f"user={u} password = {w} host={h}", kv_unquoted,
                       lambda d: conninfo_to_dict(d).get("password")),
    "redis-userinfo": (lambda w, u, h, p: f"redis://{u}:{w}@{h}:{p}/0", lambda pw: pw,
                       lambda d: parse_url(d).get("password")),
    "redis-no-user": (lambda w, u, h, p: f"rediss://:{w}@{h}:{p}/2", lambda pw: pw,
                      lambda d: parse_url(d).get("password")),
    "redis-query": (lambda w, u, h, p: f"redis://{h}:{p}/0?password={w}", lambda pw: quote(pw, safe=""),
                    lambda d: parse_url(d).get("password")),
}  # fmt: skip


@pytest.mark.parametrize("shape", sorted(SHAPES))
@settings(max_examples=100, deadline=None)
@given(data=st.data(), user=NAME, host=HOST, port=PORT)
def test_no_password_survives_redaction(shape: str, data: st.DataObject, user: str, host: str, port: int) -> None:
    build, write, client_reads = SHAPES[shape]
    password = data.draw(RAW_PASSWORDS.get(shape, ANY_PASSWORD))
    written = write(password)
    dsn = build(written, user, host, port)
    assume(client_reads(dsn) == password)  # a form the client really accepts, with this very password
    assert has_password(dsn) and parsed_password(dsn) == password
    for around in ("{}", "cannot reach the ledger at {}: connection refused", "url '{}' is not supported"):
        text, rest = around.format(dsn), around.format(build(MASK, user, host, port))
        if password in rest or written in rest:
            continue  # the password is also a host name or a word of the message: nothing to tell apart
        hidden = redact(text)  # the patterns alone, with no hint of which password to look for
        assert password not in hidden and written not in hidden, hidden
        if around == "{}":  # alone, exactly the password goes (in a message, what follows it may go too)
            assert hidden == build(MASK, user, host, port)
        assert host in hidden  # still says where
        assert password not in redact(text, dsn) and written not in redact(text, dsn)


@given(password=ANY_PASSWORD.filter(lambda pw: len(pw) >= 4))
def test_a_known_password_is_hidden_wherever_a_library_quotes_it(password: str) -> None:
    dsn = f"postgresql://swarm:{quote(password, safe='')}@db.example:5432/swarm"
    message = f'FATAL: password "{password}" was rejected (sent as {quote(password, safe="")})'
    hidden = redact(message, dsn)
    assert password not in hidden and quote(password, safe="") not in hidden


@pytest.mark.parametrize(
    "url",
    ["postgresql://postgres@oracle:5432/postgres", "redis://oracle:6379/0", "http://starlord:6333",
     "sqlite:////srv/swarm/ledger.db", "host=oracle user=swarm dbname=swarm",
     "postgresql://swarm@oracle/swarm?sslmode=require&passfile=/etc/swarm/pgpass"],
)  # fmt: skip
def test_urls_without_a_password_are_left_alone(url: str) -> None:
    assert not has_password(url)
    assert redact(url) == url


@pytest.mark.parametrize(
    ("url", "misread"),
    [("postgresql://swarm:p@ss@oracle:5432/swarm", True), ("postgresql://swarm:pa/ss@oracle/swarm", True),
     ("postgresql://swarm:p%40ss@oracle/swarm", False), ("postgresql://swarm:p?ss#x@oracle/swarm", False),
     ("redis://:p@ss@oracle:6379/0", False)],
)  # fmt: skip
def test_a_raw_at_or_slash_in_a_postgres_password_is_refused_without_echoing_it(url: str, misread: bool) -> None:
    assert misread_password(url) is misread
    if misread:
        with pytest.raises(ConfigError, match="percent-encode") as info:
            Database(url)
        assert "p@ss" not in str(info.value) and "ss@" not in str(info.value) and "pa/ss" not in str(info.value)
