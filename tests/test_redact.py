"""The redactor and the one text cleaner every outbound text passes through.

The property tests build outbound texts the way a PSA, an SMTP server or our
own code would (raw secrets, URL-encoded and JSON-escaped ones, Basic tokens,
AUTH PLAIN and AUTH LOGIN blobs for any user name length) inside random text,
then cut them at a random point and look for any 4-character piece of a secret
or of the part of an encoding that only the secret determines.

PSABILL_FUZZ_EXAMPLES raises the example budget (default 300) for a longer hunt.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import os
import re
import string
import sys
import threading
import unicodedata
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Set, Tuple
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psabill.config.keys import SecretRef
from psabill.config.secrets import resolve
from psabill.net.errors import RemoteError
from psabill.net.http import EXCERPT_CHARS, HttpClient
from psabill.text import clean, redact
from psabill.text.log import ScrubbingFormatter

EXAMPLES = int(os.environ.get("PSABILL_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Printable ASCII with the space but no line breaks: what a config or an env var holds.
SECRET_CHARS = string.ascii_letters + string.digits + string.punctuation + " "
GRAM = 4


@pytest.fixture(autouse=True)
def fresh_registry() -> Iterator[None]:
    redact.clear()
    yield
    redact.clear()


def grams(text: str, n: int = GRAM) -> Set[str]:
    return {text[i: i + n] for i in range(len(text) - n + 1)}


# -- encoders, written here independently of psabill.text.redact -----------------------


def b64(data: bytes, urlsafe: bool, padded: bool) -> str:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(data).decode("ascii")
    return text if padded else text.rstrip("=")


def determined(blob: bytes, secret: bytes, urlsafe: bool) -> str:
    """The base64 characters of ``blob`` that only ``secret`` (its last part) determines."""
    offset = len(blob) - len(secret)
    encoded = b64(blob, urlsafe, True)
    first = -(-8 * offset // 6)
    last = 8 * len(blob) // 6
    return encoded[first:last]


def random_hex_case(text: str, upper: List[bool]) -> str:
    flips = iter(upper * (len(text) // max(1, len(upper)) + 1))
    return re.sub(r"%[0-9A-Fa-f]{2}", lambda m: m.group(0).upper() if next(flips) else m.group(0).lower(), text)


Form = Tuple[str, List[str]]  # (encoded text, parts of it the secret alone determines)


@st.composite
def encoded_forms(draw: st.DrawFn, secret: str) -> Form:
    raw = secret.encode("utf-8")
    kind = draw(st.sampled_from(["raw", "quote", "quote_slash", "quote_plus", "json",
                                 "auth_plain", "auth_plain_authzid", "auth_login", "basic"]))
    if kind == "raw":
        return secret, [secret]
    if kind in ("quote", "quote_slash", "quote_plus"):
        text = {"quote": quote(secret, safe=""), "quote_slash": quote(secret),
                "quote_plus": quote_plus(secret)}[kind]
        text = random_hex_case(text, draw(st.lists(st.booleans(), min_size=1, max_size=8)))
        return text, [text]
    if kind == "json":
        text = json.dumps(secret)[1:-1]
        return text, [text]
    urlsafe = draw(st.booleans())
    padded = draw(st.booleans())
    user = draw(st.text(alphabet=string.ascii_letters + string.digits + "@._-+", max_size=40))
    if kind == "auth_plain":
        blob = b"\0" + user.encode() + b"\0" + raw
    elif kind == "auth_plain_authzid":
        blob = user.encode() + b"\0" + user.encode() + b"\0" + raw
    elif kind == "auth_login":
        blob = raw
    else:
        company = draw(st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=20))
        public = draw(st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=20))
        # Basic token: base64(company+public:private); the private key is the secret, at its end.
        blob = f"{company}+{public}:".encode() + raw
    return b64(blob, urlsafe, padded), [determined(blob, raw, urlsafe)]


SURROUNDING = st.text(max_size=60)  # any code point: controls, bidi, emoji, surrogates, ...
SEPARATORS = st.sampled_from(["", " ", "\n", ":", '"', "=", "\t", "\x1b["])


def assert_nothing_leaks(secret: str, forms: List[Form], pieces: List[str], seps: List[str],
                         limit: Optional[int]) -> None:
    """Build the text, clean it onto one line (clean.message), and compare with the same text built with [redacted] in place."""
    text, control = pieces[0], pieces[0]
    for (encoded, _), sep, piece in zip(forms, seps, pieces[1:]):
        text += sep + encoded + sep + piece
        control += sep + redact.REDACTED + sep + piece
    redact.clear()  # one example, one secret: the fixture clears per test, not per example
    redact.register(secret)
    out = clean.message(text, limit)
    guarded = grams(secret)
    for _, cores in forms:
        for core in cores:
            guarded |= grams(core)
    innocent = grams(clean.message(control)) | grams(redact.REDACTED)
    leaks = sorted((grams(out) & guarded) - innocent)
    assert leaks == [], f"{leaks} of {secret!r} survive in {out!r}"
    if limit is not None:
        assert len(out) <= max(0, limit)
    assert not any(unicodedata.category(ch) == "Cc" for ch in out)
    assert not set(out) & set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


@st.composite
def leak_cases(draw: st.DrawFn, secrets: st.SearchStrategy[str]) -> Tuple[str, List[Form], List[str], List[str], Optional[int]]:
    secret = draw(secrets)
    forms = draw(st.lists(encoded_forms(secret), min_size=1, max_size=4))
    pieces = draw(st.lists(SURROUNDING, min_size=len(forms) + 1, max_size=len(forms) + 1))
    seps = draw(st.lists(SEPARATORS, min_size=len(forms), max_size=len(forms)))
    total = sum(len(p) for p in pieces) + sum(len(f[0]) + 2 * len(s) for f, s in zip(forms, seps))
    limit = draw(st.one_of(st.none(), st.integers(min_value=0, max_value=total + 5)))
    return secret, forms, pieces, seps, limit


class TestTheRedactorNeverLeaks:
    @FUZZ
    @given(leak_cases(st.text(alphabet=SECRET_CHARS, min_size=8, max_size=64)))
    def test_it_never_leaves_four_characters_of_a_secret_or_its_encodings_after_any_cut(self, case) -> None:
        assert_nothing_leaks(*case)

    @FUZZ
    @given(leak_cases(st.text(alphabet=st.characters(whitelist_categories=("L", "N", "P", "S", "Zs")),
                              min_size=4, max_size=32)))
    def test_it_never_leaves_a_piece_of_a_non_ascii_secret_either(self, case) -> None:
        assert_nothing_leaks(*case)

    @FUZZ
    @given(secret=st.text(alphabet=SECRET_CHARS, min_size=8, max_size=64),
           user=st.text(alphabet=string.ascii_letters + string.digits + "@.", max_size=40),
           before=st.text(alphabet=string.ascii_letters + string.digits + "+/", max_size=20))
    def test_it_scrubs_the_whole_base64_run_around_an_auth_plain_blob_for_any_user_length(
            self, secret: str, user: str, before: str) -> None:
        blob = base64.b64encode(f"\0{user}\0{secret}".encode()).decode()
        redact.clear()
        redact.register(secret)
        assert redact.scrub(f"334 ok\r\nAUTH PLAIN {before}{blob} next") == "334 ok\r\nAUTH PLAIN [redacted] next"


class TestScrub:
    SECRET = "Pr1v@te:Key/20chars!"

    def test_it_scrubs_the_raw_secret_and_every_url_and_json_spelling(self) -> None:
        redact.register(self.SECRET)
        for form in (self.SECRET, quote(self.SECRET, safe=""), quote(self.SECRET), quote_plus(self.SECRET),
                     random_hex_case(quote(self.SECRET, safe=""), [False]),
                     json.dumps(self.SECRET)[1:-1], json.dumps(self.SECRET)[1:-1].replace("/", "\\/")):
            assert redact.scrub(f"<{form}>") == "<[redacted]>", form

    def test_it_scrubs_percent_encoding_in_either_hex_case_and_a_plus_for_a_space(self) -> None:
        redact.register("pass word/ünï")
        assert redact.scrub("q=pass+word%2fÜ".replace("Ü", "%c3%bcn%C3%AF")) == "q=[redacted]"
        assert redact.scrub("q=pass%20word%2F%C3%BCn%c3%af&x=1") == "q=[redacted]&x=1"

    def test_it_scrubs_a_basic_token_and_the_private_key_inside_it(self) -> None:
        token = base64.b64encode(f"acme+pubkey:{self.SECRET}".encode()).decode()
        redact.register(self.SECRET)  # the token itself is not registered: its core is found
        assert redact.scrub(f"Authorization: Basic {token}\r\n") == "Authorization: Basic [redacted]\r\n"

    @pytest.mark.parametrize("urlsafe", [False, True])
    @pytest.mark.parametrize("padded", [False, True])
    def test_it_scrubs_base64_at_every_alignment_in_both_alphabets(self, urlsafe: bool, padded: bool) -> None:
        redact.register(self.SECRET)
        for shift in range(6):
            blob = b64(b"x" * shift + self.SECRET.encode() + b"tail", urlsafe, padded)
            assert redact.scrub(f"[{blob}]") == "[[redacted]]", shift

    def test_it_scrubs_base64_whose_plus_and_slash_were_escaped(self) -> None:
        secret = "\xfb\xff\xbf secret>>??"  # bytes that encode to '+' and '/'
        redact.register(secret)
        blob = base64.b64encode(secret.encode()).decode()
        assert "+" in blob or "/" in blob
        for form in (blob, blob.replace("+", "%2B").replace("/", "%2f").replace("=", "%3D"),
                     blob.replace("/", "\\/")):
            assert redact.scrub(f"t={form}&") == "t=[redacted]&", form

    def test_it_scrubs_overlapping_secrets_as_one_marker(self) -> None:
        redact.register("AAAA-BBBB", "BBBB-CCCC")
        assert redact.scrub("x AAAA-BBBB-CCCC y") == "x [redacted] y"

    def test_it_scrubs_a_secret_that_is_also_registered_as_its_own_basic_token(self) -> None:
        token = base64.b64encode(b"acme+pub:key-key-key").decode()
        redact.register(token, "key-key-key")
        assert redact.scrub(f"{token}|{token[:-2]}") == "[redacted]|[redacted]"

    def test_it_ignores_values_too_short_to_be_secrets(self) -> None:
        redact.register("", "abc", "a")
        assert redact.registry().secrets == ()
        assert redact.scrub("abc a") == "abc a"

    def test_it_leaves_text_without_secrets_unchanged(self) -> None:
        redact.register(self.SECRET)
        text = "GET https://psa.example.com/v4_6_release: HTTP 500 QUJDREVGR0hJSktMTU5PUA== café 日本"
        assert redact.scrub(text) == text

    def test_a_redactor_of_its_own_does_not_touch_the_registry(self) -> None:
        own = redact.Redactor(["only-mine-1234"])
        assert own.scrub("only-mine-1234") == "[redacted]"
        assert redact.scrub("only-mine-1234") == "only-mine-1234"

    def test_it_is_fast_enough_for_every_log_line(self) -> None:
        import time

        redact.register(*(f"secret-number-{i}-{'x' * i}" for i in range(8)))
        line = "2025-01-01 12:00:00 INFO GET https://psa/x: HTTP 500: database on fire; retry 1/5 in 0.5s"
        start = time.perf_counter()
        for _ in range(2000):
            redact.scrub(line)
        assert (time.perf_counter() - start) / 2000 < 0.001
        body = base64.b64encode(os.urandom(300_000)).decode() + " " + string.printable * 2000
        start = time.perf_counter()
        clean.message(body, EXCERPT_CHARS)
        assert time.perf_counter() - start < 2.0


# -- clean ---------------------------------------------------------------------


class TestNeutralize:
    @pytest.mark.parametrize("raw, shown", [
        ("\x1b[2J", "\\x1b[2J"),
        ("\x07", "\\x07"),
        ("\x00", "\\x00"),
        ("\x7f", "\\x7f"),
        ("\x9b31m", "\\x9b31m"),
        ("\x85", "\\x85"),
        ("\u202e", "\\u202e"),
        ("\u202a\u202b\u202c\u202d", "\\u202a\\u202b\\u202c\\u202d"),
        ("\u2066\u2067\u2068\u2069", "\\u2066\\u2067\\u2068\\u2069"),
        ("\u200e\u200f", "\\u200e\\u200f"),
        ("\u200b\ufeff\u00ad\u061c", "\\u200b\\ufeff\\xad\\u061c"),
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\U000e0041", "\\U000e0041"),
        ("\ud800", "\\ud800"),
        ("a\nb\rc", "a\\nb\\rc"),
        ("a\tb", "a\\tb"),  # the one cleaner shows a tab as \t too (psabill.text.clean's policy)
        ("x\u200dy", "x\\u200dy"),
    ])
    def test_it_shows_control_and_bidi_characters_as_escapes(self, raw: str, shown: str) -> None:
        assert clean.clean(raw) == shown

    @pytest.mark.parametrize("text", [
        "Café Müller GmbH", "Ærøskøbing Å/S", "株式会社テスト", "شركة", "עברית", "Ελληνικά", "नमस्ते",
        "👍🏽", "👨\u200d👩\u200d👧", "🏳\ufe0f\u200d🌈", "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F",
        "می\u200cخواهم", "naïve — “quoted” … ™ ½ \u00a0nbsp", "C:\\Users\\x",
    ])
    def test_it_keeps_ordinary_unicode_intact(self, text: str) -> None:
        assert clean.clean(text) == text
        assert clean.message(text) == " ".join(text.split())

    def test_it_keeps_newlines_in_multiline_mode_only(self) -> None:
        assert clean.clean("a\nb\x1b", lines=True) == "a\nb\\x1b"

    def test_it_escapes_every_control_format_surrogate_and_separator_code_point(self) -> None:
        kept = {"\t", "\u200c", "\u200d"}  # tab by choice; joiners only escape outside words (above)
        missed = []
        for cp in range(sys.maxunicode + 1):
            ch = chr(cp)
            if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") and ch not in kept:
                if clean.clean(ch) == ch:
                    missed.append(f"U+{cp:04X}")
        assert missed == []

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(st.text())
    def test_it_never_lets_a_control_through_and_is_idempotent(self, text: str) -> None:
        shown = clean.clean(text)
        assert clean.clean(shown) == shown
        assert not any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") and ch != "\t" for ch in shown)
        line = clean.message(text)
        assert not any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in line)
        assert "  " not in line and line == line.strip()


class TestOneLine:
    def test_it_scrubs_before_it_cuts(self) -> None:
        key = "K3y-0f-tw3nty-chars!"
        redact.register(key)
        text = "x" * 190 + key + " and more"
        out = clean.message(text, 200)
        assert len(out) <= 200 and out.endswith("\u2026")
        assert not grams(out) & grams(key)

    def test_it_folds_every_kind_of_line_break_to_one_space(self) -> None:
        assert clean.message(" a\r\n\tb\x0b\x0cc\x85d\u2028e\u2029f  ") == "a b c d e f"

    def test_it_cuts_to_the_limit_including_the_ellipsis(self) -> None:
        assert clean.message("abcdef", 4) == "abc\u2026"
        assert clean.message("abcdef", 6) == "abcdef"
        assert clean.message("abcdef", 1) == "\u2026"
        assert clean.message("abcdef", 0) == ""

    def test_it_scrubs_a_secret_that_only_appears_once_whitespace_is_folded(self) -> None:
        redact.register("two words")
        assert clean.message("two\n  words") == "[redacted]"


# -- the wired edges ----------------------------------------------------------------


class _Body(http.server.BaseHTTPRequestHandler):
    status = 400
    body = b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def psa_says() -> Iterator[Callable[[int, str], str]]:
    """A loopback server answering every GET with the status and body given; its URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Body)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def answer(status: int, body: str) -> str:
        _Body.status, _Body.body = status, body.encode("utf-8")
        return f"http://127.0.0.1:{server.server_address[1]}/v4_6_release/apis/3.0/system/info"

    yield answer
    server.shutdown()
    server.server_close()
    thread.join(5)


class TestHttpClient:
    KEY = "a1B2c3D4e5F6g7H8i9J0"  # 20 characters, like a ConnectWise private key

    def test_it_never_leaks_a_private_key_cut_by_the_error_excerpt(self, psa_says) -> None:
        body = ("e" * 190 + self.KEY + "x" * 50)
        assert body.index(self.KEY) == 190 and EXCERPT_CHARS == 200
        url = psa_says(400, body)
        http_client = HttpClient(headers={}, secrets=[self.KEY], max_retries=0, timeout=5)
        with pytest.raises(RemoteError) as caught:
            http_client.get_json(url)
        message = str(caught.value)
        assert "HTTP 400" in message and message.endswith("[redacted\u2026")  # the marker, cut
        assert not grams(message) & grams(self.KEY), message
        assert not grams(repr(caught.value)) & grams(self.KEY)

    @pytest.mark.parametrize("at", [0, 150, 185, 190, 195, 199, 205])
    def test_it_never_leaks_an_encoded_key_at_any_cut(self, psa_says, at: int) -> None:
        token = base64.b64encode(f"acme+pub:{self.KEY}".encode()).decode()
        http_client = HttpClient(headers={"Authorization": f"Basic {token}"}, secrets=[self.KEY],
                                 max_retries=0, timeout=5)
        for form in (self.KEY, quote(self.KEY), token,
                     base64.b64encode(f"\0user\0{self.KEY}".encode()).decode()):
            url = psa_says(500, "e" * at + form + " tail")
            with pytest.raises(RemoteError) as caught:
                http_client.get_json(url)
            assert not grams(str(caught.value)) & (grams(self.KEY) | grams(token)), str(caught.value)

    def test_it_escapes_controls_in_a_psa_body(self, psa_says) -> None:
        url = psa_says(400, '{"message": "bad \x1b[31mred\x07 \u202eevil"}')
        with pytest.raises(RemoteError) as caught:
            HttpClient(headers={}, max_retries=0, timeout=5).get_json(url)
        assert "\\x1b[31mred\\x07 \\u202eevil" in str(caught.value)
        assert "\x1b" not in str(caught.value)

    def test_it_registers_its_secrets_with_the_shared_redactor(self) -> None:
        HttpClient(headers={"Authorization": "Basic QUJDREVGR0hJSktM"}, secrets=["integration-code-1"])
        assert redact.scrub("integration-code-1 QUJDREVGR0hJSktM") == "[redacted] [redacted]"


class TestSecretsModule:
    def test_it_registers_each_secret_when_it_is_resolved(self, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("PSABILL_TEST_KEY", "from-the-environment")
        (tmp_path / "key").write_text("from-a-file-123\n")
        (tmp_path / "key").chmod(0o600)  # a *_file secret readable by group or others is refused
        assert resolve(SecretRef("[psa]", "secret", env="PSABILL_TEST_KEY")) == "from-the-environment"
        assert resolve(SecretRef("[notify.smtp]", "password", literal="literal-pass")) == "literal-pass"
        assert resolve(SecretRef("[psa]", "private_key", file=tmp_path / "key")) == "from-a-file-123"
        assert redact.scrub("from-the-environment literal-pass from-a-file-123") == \
            "[redacted] [redacted] [redacted]"


class TestUrlPasswords:
    def test_it_finds_a_urls_userinfo_password_and_password_parameters_raw_and_decoded(self) -> None:
        url = "postgresql://billing:p%40ss-word@db.example/psabill?sslmode=require&password=q%2Fz-9876"
        assert redact.url_passwords(url) == ["p%40ss-word", "p@ss-word", "q%2Fz-9876", "q/z-9876"]
        assert redact.url_passwords("https://psa.example.com/v4_6_release?user=x") == []

    def test_it_masks_every_password_in_a_text_without_decoding_it(self) -> None:
        text = "cannot open postgresql://billing:s3cr%zz@db.example/x?password=hunter22&x=1: refused"
        assert redact.mask_url(text) == "cannot open postgresql://billing:***@db.example/x?password=***&x=1: refused"
        assert redact.mask_url("https://user@host/x and plain text") == "https://user@host/x and plain text"

    def test_a_registered_url_password_is_scrubbed_everywhere(self) -> None:
        redact.register_url("postgresql://billing:pa%24%24word-1@db.example/psabill")
        assert redact.scrub("login pa$$word-1 and pa%24%24word-1") == "login [redacted] and [redacted]"


class TestLogFormatter:
    def record(self, msg: str, *args: object) -> logging.LogRecord:
        return logging.makeLogRecord({"msg": msg, "args": args, "levelname": "INFO", "levelno": logging.INFO})

    def test_it_scrubs_and_neutralizes_every_log_message(self) -> None:
        redact.register("smtp-password-99")
        line = ScrubbingFormatter("%(levelname)s %(message)s").format(
            self.record("PSA said %s", "auth smtp-password-99\n2025-01-01 INFO forged \x1b[2J \u202e"))
        assert line == "INFO PSA said auth [redacted]\\n2025-01-01 INFO forged \\x1b[2J \\u202e"

    def test_it_scrubs_a_traceback_but_keeps_its_lines(self) -> None:
        redact.register("smtp-password-99")
        try:
            raise RuntimeError("login failed for smtp-password-99 \x1b]0;title\x07")
        except RuntimeError:
            record = logging.makeLogRecord({"msg": "boom", "exc_info": sys.exc_info()})
        text = ScrubbingFormatter("%(message)s").format(record)
        assert "smtp-password-99" not in text and "[redacted]" in text
        assert "\\x1b]0;title\\x07" in text and "\n" in text
