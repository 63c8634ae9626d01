"""The shared HTTP layer against a real loopback server: retries, limits, errors, scrubbing."""

from __future__ import annotations

import base64
import socket
import threading
from typing import List

import pytest

from psabill.net.errors import AuthRefused, Halted, RemoteError, Unreachable
from psabill.net.http import HttpClient, check_url, rebase
from psabill.sandbox.connectwise import Sandbox

SECRET = "s3cret-private-key"


def _auth(sb: Sandbox) -> str:
    return "Basic " + base64.b64encode(f"{sb.company}+{sb.public_key}:{SECRET}".encode()).decode()


@pytest.fixture
def sb():
    with Sandbox(private_key=SECRET) as server:
        server.add_company("ACME", "Acme Ltd")
        yield server


def client(sb: Sandbox, waits: List[float], **kwargs) -> HttpClient:
    options = dict(timeout=2.0, max_retries=3, backoff=0.001, max_wait=0.05, sleep=waits.append)
    options.update(kwargs)
    return HttpClient(headers={"Authorization": _auth(sb), "clientId": sb.client_id}, secrets=[SECRET], **options)


def info_url(sb: Sandbox) -> str:
    return sb.api_url + "/system/info"


class TestUrlPolicy:
    @pytest.mark.parametrize("url", ["https://api-na.myconnectwise.net/x", "http://127.0.0.1:8080/x",
                                     "http://127.9.9.9/x", "http://localhost:1/x", "http://[::1]:9/x"])
    def test_it_allows_https_and_loopback_http(self, url: str) -> None:
        check_url(url)

    @pytest.mark.parametrize("url", ["http://psa.example.com/v4_6_release", "http://10.0.0.5/x",
                                     "http://localhost.example.com/x", "ftp://psa.example.com/x"])
    def test_it_refuses_plain_http_off_loopback_naming_the_url(self, url: str) -> None:
        with pytest.raises(RemoteError) as caught:
            check_url(url + "?user=someone")
        assert url in str(caught.value)
        assert "user=someone" not in str(caught.value)

    def test_paging_links_are_followed_on_our_own_origin(self) -> None:
        assert rebase("https://elsewhere.test/v4_6_release/apis/3.0/company/companies?page=2&pageSize=1000",
                      "https://psa.example.com/v4_6_release/apis/3.0") == \
            "https://psa.example.com/v4_6_release/apis/3.0/company/companies?page=2&pageSize=1000"

    def test_it_refuses_before_opening_a_socket(self) -> None:
        http = HttpClient(headers={})
        with pytest.raises(RemoteError, match="plain-HTTP"):
            http.request("GET", "http://psa.example.com/x")
        assert http.request_count == 0


class TestRetries:
    def test_it_rides_out_a_429_storm_honouring_retry_after(self, sb: Sandbox) -> None:
        waits: List[float] = []
        sb.fail(429, 3, retry_after="0.02")
        http = client(sb, waits)
        assert http.get_json(info_url(sb))["version"]
        assert waits == [0.02, 0.02, 0.02]
        assert http.request_count == 4 == sb.total

    def test_it_caps_a_long_retry_after(self, sb: Sandbox) -> None:
        waits: List[float] = []
        sb.fail(429, 1, retry_after="3600")
        client(sb, waits, max_wait=0.01).get_json(info_url(sb))
        assert waits == [0.01]

    def test_backoff_grows_with_jitter_and_stays_capped(self, sb: Sandbox) -> None:
        waits: List[float] = []
        sb.fail(503, 5)
        client(sb, waits, max_retries=5, backoff=0.01, max_wait=0.03).get_json(info_url(sb))
        assert len(waits) == 5
        assert 0.005 <= waits[0] <= 0.01 and 0.01 <= waits[1] <= 0.02
        assert all(w <= 0.03 for w in waits)

    def test_500s_are_retried_then_raised_with_status_and_excerpt(self, sb: Sandbox) -> None:
        waits: List[float] = []
        sb.fail(500, 10, body={"message": "database on fire"})
        with pytest.raises(RemoteError) as caught:
            client(sb, waits, max_retries=2).get_json(info_url(sb))
        assert type(caught.value) is RemoteError
        assert "HTTP 500" in str(caught.value) and "database on fire" in str(caught.value)
        assert sb.total == 3

    def test_a_400_is_not_retried(self, sb: Sandbox) -> None:
        waits: List[float] = []
        sb.fail(400, 1, body={"message": "bad conditions"})
        with pytest.raises(RemoteError, match="HTTP 400.*bad conditions"):
            client(sb, waits).get_json(info_url(sb))
        assert sb.total == 1 and waits == []

    def test_a_write_that_may_have_landed_is_not_retried(self, sb: Sandbox) -> None:
        waits: List[float] = []
        sb.fail(500, 1)
        with pytest.raises(RemoteError, match="HTTP 500"):
            client(sb, waits).request("GET", info_url(sb), idempotent=False)
        sb.fail(429, 1, retry_after="0")
        client(sb, waits).request("GET", info_url(sb), idempotent=False)  # 429: certainly not applied
        assert sb.total == 3

    def test_a_timeout_is_retried_then_unreachable(self, sb: Sandbox) -> None:
        waits: List[float] = []
        sb.delay(0.5, 1)
        assert client(sb, waits, timeout=0.1).get_json(info_url(sb))
        sb.delay(0.5, 2)
        with pytest.raises(Unreachable, match="timed out"):
            client(sb, waits, timeout=0.1, max_retries=1).get_json(info_url(sb))


class TestFailures:
    def test_refused_credentials_are_an_auth_error_without_the_secret(self) -> None:
        with Sandbox(private_key="the-right-key") as server:
            waits: List[float] = []
            http = client(server, waits)  # sends SECRET, which is wrong here
            with pytest.raises(AuthRefused) as caught:
                http.get_json(info_url(server))
            assert "401" in str(caught.value)
            for text in (str(caught.value), repr(caught.value)):
                assert SECRET not in text
            assert server.total == 1  # never retried

    def test_a_secret_echoed_by_the_psa_is_scrubbed(self, sb: Sandbox) -> None:
        waits: List[float] = []
        token = _auth(sb).split(" ")[1]
        sb.fail(400, 1, body={"message": f"bad key {SECRET} in {token}"})
        with pytest.raises(RemoteError) as caught:
            client(sb, waits).get_json(info_url(sb))
        for text in (str(caught.value), repr(caught.value)):
            assert SECRET not in text and token not in text
        assert "[redacted]" in str(caught.value)

    def test_a_psa_that_dies_is_unreachable(self, sb: Sandbox) -> None:
        waits: List[float] = []
        http = client(sb, waits)
        sb.die_after(2)
        http.get_json(info_url(sb))
        http.get_json(info_url(sb))
        with pytest.raises(Unreachable):
            http.get_json(info_url(sb))
        assert len(waits) == 3

    def test_a_closed_port_is_unreachable(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        http = HttpClient(headers={"Authorization": "Basic " + SECRET}, max_retries=1, backoff=0.001)
        with pytest.raises(Unreachable) as caught:
            http.get_json(f"http://127.0.0.1:{port}/x")
        assert SECRET not in str(caught.value) and http.request_count == 2


class TestLimits:
    def test_concurrency_is_bounded_and_every_attempt_counted(self) -> None:
        with Sandbox(private_key=SECRET, latency_ms=20) as server:
            waits: List[float] = []
            http = client(server, waits, concurrency=2)
            server.fail(429, 2, retry_after="0")
            threads = [threading.Thread(target=http.get_json, args=(info_url(server),)) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert server.max_inflight["GET system/info"] == 2
            assert http.request_count == 10 == server.total

    def test_a_request_told_not_to_go_once_it_holds_its_slot_is_neither_sent_nor_counted(self, sb: Sandbox) -> None:
        waits: List[float] = []
        http = client(sb, waits)
        asked: List[bool] = []
        with pytest.raises(Halted):
            http.get_json(info_url(sb), go=lambda: asked.append(True) or False)
        assert asked == [True] and http.request_count == 0 == sb.total
        assert http.get_json(info_url(sb), go=lambda: True) and http.request_count == 1 == sb.total

    def test_a_request_budget_stops_before_the_limit(self, sb: Sandbox) -> None:
        waits: List[float] = []
        http = client(sb, waits, max_requests=2)
        http.get_json(info_url(sb))
        http.get_json(info_url(sb))
        with pytest.raises(RemoteError, match="budget of 2"):
            http.get_json(info_url(sb))
        assert sb.total == 2
