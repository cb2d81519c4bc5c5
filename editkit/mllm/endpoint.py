"""Where requests (and the API key) may go: the configured endpoint's host, when it is a public address or loopback.

A client config comes from a file someone may have handed you; an endpoint such as ``http://169.254.169.254/v1``
would send prompts and the ``Authorization`` header to a cloud metadata service, one on a private address to
whatever listens there. So before anything is sent, :func:`check_endpoint` resolves the endpoint's host and refuses:

* cloud metadata services, by name (``metadata.google.internal``, ...) or address (``169.254.169.254``, ...),
  always;
* link-local (169.254.0.0/16, fe80::/10), private (10/8, 172.16/12, 192.168/16, fc00::/7), shared (100.64/10),
  unspecified, multicast and other non-routable addresses, unless the client sets ``allow_private_endpoint: true``.

Loopback (127.0.0.0/8, ::1, ``localhost``) is allowed: a local ``vllm serve`` is the usual setup. A host name must
resolve only to allowed addresses. :class:`HostGuard` repeats the check each time a connection opens and connects
to the addresses it vetted, so a name that resolves elsewhere later (DNS rebinding) or a connection to any other
host is refused too; redirects are never followed.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Callable, Optional

import httpx

from editkit.errors import ConfigError
from editkit.mllm.backends import MLLMError

OPTION = "allow_private_endpoint"
METADATA_NAMES = frozenset({
    "metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal",
    "metadata.tencentyun.com", "metadata.platformequinix.com",
})
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack ...
    "169.254.170.2",  # AWS ECS task metadata
    "fd00:ec2::254",  # AWS over IPv6
    "100.100.100.200",  # Alibaba Cloud
))

Resolver = Callable[[str, int], list[str]]


class EndpointRefused(MLLMError, ConfigError):
    """The endpoint points somewhere requests must not go (a one-line user error naming the option)."""


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def address_problem(address: str, allow_private: bool) -> Optional[str]:
    """Why requests must not go to ``address`` (None: they may)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id ("fe80::1%eth0") says nothing here
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata service address"
    if ip.is_loopback or (ip.is_global and not ip.is_multicast) or allow_private:
        return None
    kind = ("link-local" if ip.is_link_local else "unspecified" if ip.is_unspecified else
            "multicast" if ip.is_multicast else "private" if ip.is_private else "non-routable")
    return f"a {kind} address"


def vet_host(host: str, port: int, allow_private: bool, resolve: Resolver = _system_resolver) -> list[str]:
    """The addresses of ``host`` requests may go to; raises :class:`EndpointRefused` if any of them is refused.

    An empty list: the name does not resolve (the connection will fail and say so)."""
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_NAMES:
        raise EndpointRefused(f"host {host} is a cloud metadata service: refused (even with {OPTION})")
    try:
        addresses = [str(ipaddress.ip_address(name.split("%", 1)[0]))] if _is_literal(name) else resolve(name, port)
    except (OSError, UnicodeError):
        return []
    for address in addresses:
        problem = address_problem(address, allow_private)
        if problem is not None:
            shown = host if address == host.strip("[]") else f"{host} ({address})"
            if "metadata" in problem:
                raise EndpointRefused(f"host {shown} is {problem}: refused (even with {OPTION})")
            raise EndpointRefused(f"host {shown} is {problem}: refused; set {OPTION}: true in the client section "
                                  "if the MLLM server really runs there")
    return addresses


def _is_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%", 1)[0])
        return True
    except ValueError:
        return False


def check_endpoint(endpoint: str, allow_private: bool, resolve: Resolver = _system_resolver) -> "HostGuard":
    """Check ``endpoint`` before anything is sent; the :class:`HostGuard` that keeps every connection to it."""
    try:
        url = httpx.URL(endpoint)
    except (httpx.InvalidURL, TypeError, ValueError) as error:
        raise EndpointRefused(f"MLLM endpoint {endpoint!r} is not a URL ({error})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise EndpointRefused(f"MLLM endpoint {endpoint!r} must be an http:// or https:// URL with a host")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        vet_host(url.host, port, allow_private, resolve)
    except EndpointRefused as error:
        raise EndpointRefused(f"MLLM endpoint {endpoint}: {error}") from None
    return HostGuard(url.host, allow_private, resolve)


class HostGuard:
    """Called by the transport for each new connection: the addresses to connect to, or a refusal."""

    def __init__(self, host: str, allow_private: bool, resolve: Resolver = _system_resolver):
        self.host = host.strip("[]").rstrip(".").lower()
        self.allow_private = allow_private
        self.resolve = resolve

    def __call__(self, host: str, port: int) -> list[str]:
        import httpcore

        if host.strip("[]").rstrip(".").lower() != self.host:
            raise httpcore.ConnectError(f"refused to connect to {host}: requests go to {self.host} only")
        try:
            addresses = vet_host(host, port, self.allow_private, self.resolve)
        except EndpointRefused as error:
            raise httpcore.ConnectError(str(error)) from None
        if not addresses:
            raise httpcore.ConnectError(f"host {host} does not resolve")
        return addresses
