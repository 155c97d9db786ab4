"""What an app sees when a call fails: the sidecar's address, the cause, fail closed."""

from __future__ import annotations

import grpc
import pytest

from coherence_client import (
    Client,
    ConnectError,
    Freshness,
    InvalidAddress,
    Unavailable,
    Version,
    parse_address,
)
from support import free_port


@pytest.mark.parametrize(
    "address, why",
    [
        ("127.0.0.1", "no port"),
        ("http://localhost", "no port"),
        ("https://127.0.0.1:50051", "scheme"),
        ("ftp://127.0.0.1:50051", "scheme"),
        ("http://127.0.0.1:50051/cache", "path"),
        ("http://", "no host"),
        ("127.0.0.1:notaport", "port"),
        ("two words:1", ""),
    ],
)
def test_a_malformed_address_is_invalid_address_saying_why(address, why):
    with pytest.raises(InvalidAddress) as raised:
        Client(address)
    assert why in str(raised.value)
    assert raised.value.address == address
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT


def test_good_addresses_parse():
    assert parse_address("127.0.0.1:50051") == "127.0.0.1:50051"
    assert parse_address("http://localhost:1/") == "localhost:1"
    assert parse_address("[::1]:7") == "[::1]:7"


def test_a_call_to_nobody_is_unavailable_naming_the_address_with_its_cause():
    address = f"127.0.0.1:{free_port()}"
    with Client(address, timeout=2.0) as client:
        with pytest.raises(Unavailable) as raised:
            client.get(["k"])
        assert address in str(raised.value)
        assert isinstance(raised.value.__cause__, grpc.RpcError)
        # The kit's services name it too.
        with pytest.raises(Unavailable, match=address):
            client.jobs().try_acquire("j", 1.0)


def test_connect_to_nobody_is_a_connect_error_naming_the_address():
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(ConnectError, match=address):
        Client.connect(address, timeout=0.3)


def test_nothing_is_current_when_nobody_can_vouch():
    with Client(f"127.0.0.1:{free_port()}", timeout=0.5) as client:
        assert client.freshness("k", Version("1.1.a")) is Freshness.UNVERIFIABLE
        assert client.is_current("k", Version("1.1.a")) is False


def test_a_stream_to_nobody_fails_at_once_naming_the_address():
    address = f"127.0.0.1:{free_port()}"
    with Client(address, timeout=2.0) as client:
        with pytest.raises(Unavailable, match=address):
            client.watch(["k"])
        with pytest.raises(Unavailable, match=address):
            client.notifications().subscribe(["t"])
