"""`HOST:PORT` as every listener of the daemon takes it: one parser, one loopback rule."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from workflowd.domain.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    """Without IPv6 brackets: what sockets take."""
    port: int

    @classmethod
    def parse(cls, text: str, setting: str) -> Address:
        """`HOST:PORT` or `[IPv6]:PORT`; port 0 lets the system choose."""
        host, colon, port = text.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not colon or not host or not port.isdigit() or int(port) > 65535:
            raise InvalidRequest(setting, f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:50051)")
        return cls(host, int(port))

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def with_port(self, port: int) -> Address:
        return Address(self.host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
