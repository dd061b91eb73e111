"""A backend that carries nothing and records every call (``--use-none`` and tests)."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from pypluto.kernel.base import KernelBackend
from pypluto.params import IPAddress, PolicyParams, SAParams, SAStats


class NoneBackend(KernelBackend):
    """Accepts every SA and policy, keeps them in dicts, and logs each call in ``calls``.

    ``calls`` holds ``(method, argument)`` tuples in order; SA keys are never
    logged (SAParams keeps them out of its repr).
    """

    name = "none"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.sas: dict[tuple[str, int, str], SAParams] = {}
        self.policies: dict[tuple[str, str, str, int], PolicyParams] = {}
        self.stats: dict[tuple[str, int, str], SAStats] = {}
        self.esp_received: list[tuple[bytes, tuple[str, int], tuple[str, int]]] = []
        self.closed = False
        self._lock = threading.Lock()

    @staticmethod
    def _sa_key(dst: IPAddress, spi: int, protocol: str) -> tuple[str, int, str]:
        return (str(dst), spi, protocol)

    @staticmethod
    def _pol_key(p: PolicyParams) -> tuple[str, str, str, int]:
        return (str(p.src), str(p.dst), p.direction, p.reqid)

    def add_sa(self, sa: SAParams) -> None:
        with self._lock:
            self.calls.append(("add_sa", sa))
            key = self._sa_key(sa.dst, sa.spi, sa.protocol)
            self.sas[key] = sa
            self.stats.setdefault(key, SAStats())

    def del_sa(self, dst: IPAddress, spi: int, protocol: str = "esp") -> None:
        with self._lock:
            self.calls.append(("del_sa", (dst, spi, protocol)))
            key = self._sa_key(dst, spi, protocol)
            self.sas.pop(key, None)
            self.stats.pop(key, None)

    def move_sa(self, dst: IPAddress, spi: int, new_src: IPAddress, new_dst: IPAddress,
                encap_sport: int | None, encap_dport: int | None,
                protocol: str = "esp") -> None:
        with self._lock:
            self.calls.append(("move_sa", (dst, spi, new_src, new_dst, encap_sport,
                                           encap_dport)))
            for key, sa in list(self.sas.items()):
                if key[:2] == (str(dst), spi):
                    moved = dataclasses.replace(sa, src=new_src, dst=new_dst,
                                                encap_sport=encap_sport,
                                                encap_dport=encap_dport)
                    del self.sas[key]
                    nkey = self._sa_key(new_dst, spi, sa.protocol)
                    self.sas[nkey] = moved
                    self.stats[nkey] = self.stats.pop(key, SAStats())

    def add_policy(self, policy: PolicyParams) -> None:
        with self._lock:
            self.calls.append(("add_policy", policy))
            self.policies[self._pol_key(policy)] = policy

    def del_policy(self, policy: PolicyParams) -> None:
        with self._lock:
            self.calls.append(("del_policy", policy))
            self.policies.pop(self._pol_key(policy), None)

    def get_sa_stats(self, dst: IPAddress, spi: int, protocol: str = "esp") -> SAStats | None:
        with self._lock:
            self.calls.append(("get_sa_stats", (dst, spi, protocol)))
            return self.stats.get(self._sa_key(dst, spi, protocol))

    def flush_own(self) -> None:
        with self._lock:
            self.calls.append(("flush_own", None))
            self.sas.clear()
            self.policies.clear()
            self.stats.clear()

    def handle_esp(self, data: bytes, local: tuple[str, int], remote: tuple[str, int]) -> None:
        with self._lock:
            self.calls.append(("handle_esp", len(data)))
            self.esp_received.append((bytes(data), local, remote))

    def close(self) -> None:
        with self._lock:
            self.calls.append(("close", None))
            self.closed = True
