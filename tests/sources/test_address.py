"""The public-address judgement (sources/address.py): IPv6 forms that carry an IPv4 address inside
are judged by that address; a public server refuses them before any connection is attempted."""
import socket

import pytest

from dino_demo.sources import address, download
from dino_demo.sources.download import GENERIC_FAILURE, DownloadError, Policy, fetch_url

# Each carries 127.0.0.1 (or another inward IPv4 address) inside an IPv6 address.
EMBEDDING_INWARD = {
    "::127.0.0.1": "127.0.0.1",  # IPv4-compatible
    "::ffff:127.0.0.1": "127.0.0.1",  # IPv4-mapped
    "::ffff:0:127.0.0.1": "127.0.0.1",  # IPv4-translated (SIIT)
    "64:ff9b::7f00:1": "127.0.0.1",  # NAT64, well-known prefix
    "64:ff9b::a9fe:a9fe": "169.254.169.254",  # NAT64 to the cloud metadata address
    "2002:7f00:1::": "127.0.0.1",  # 6to4
    "2002:a00:1::1": "10.0.0.1",  # 6to4 of a private address
    "2001:0:4136:e378:8000:63bf:80ff:fffe": "127.0.0.1",  # Teredo client (obfuscated bits)
    "2620:0:1cfe:face:0:5efe:7f00:1": "127.0.0.1",  # ISATAP interface identifier
}


@pytest.mark.parametrize("text,inner", sorted(EMBEDDING_INWARD.items()))
def test_embedded_inward_ipv4_is_not_public(text, inner):
    assert address.parse(inner) in address.embedded_ipv4(text)
    assert not address.is_public(text)


@pytest.mark.parametrize("text", ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1",
                                  "::ffff:8.8.8.8", "[2606:4700:4700::1111]"])
def test_public_addresses_and_public_embeddings_pass(text):
    assert address.is_public(text)


@pytest.mark.parametrize("text", ["127.0.0.1", "10.1.2.3", "100.64.0.1", "169.254.169.254", "::1", "::", "fe80::1%eth0",
                                  "fc00::1", "ff02::1", "224.0.0.1", "64:ff9b:1::808:808", "0.0.0.0", "not an address"])
def test_inward_and_special_addresses_are_not_public(text):
    assert not address.is_public(text)


def test_resolve_public_refuses_a_name_with_one_inward_address(monkeypatch):
    answers = [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:4700:4700::1111", 443, 0, 0)),
               (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("64:ff9b::7f00:1", 443, 0, 0))]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    with pytest.raises(address.AddressError, match="non-public address 64:ff9b::7f00:1"):
        address.resolve_public("mixed.example", 443)
    assert address.resolve_public("mixed.example", 443, public_only=False)[0] == "2606:4700:4700::1111"


@pytest.mark.parametrize("host", ["[::127.0.0.1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]", "[::ffff:7f00:1]",
                                  "[2001:0:4136:e378:8000:63bf:80ff:fffe]"])
def test_public_mode_never_connects_to_an_embedded_inward_address(host, tmp_path, monkeypatch):
    attempts = []
    def connect(*args, **kwargs):
        attempts.append(args)
        raise OSError("no connection in this test")

    monkeypatch.setattr(socket, "create_connection", connect)
    for name in ("DINO_DEMO_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DownloadError) as info:
        fetch_url(f"https://{host}:8443/w.pth", tmp_path / "w.pth", policy=Policy(public=True))
    assert str(info.value) == GENERIC_FAILURE
    assert attempts == []
    assert download._public_address(host.strip("[]")) is False
