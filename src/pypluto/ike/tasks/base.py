"""The ``Task`` interface: one class per concern, both roles in it (strongSwan's tasks).

A task is one exchange's worth of work on one IKE SA.

- Initiator: the task manager (``ike/task_manager.py``) calls ``build`` when the
  window is free; the payloads it returns are sent as a request of ``exchange``.
  The answer goes to ``on_response``; when retransmits run out, ``on_timeout``.
  ``abandon`` releases what the task reserved (SPIs) when its IKE SA goes away.
- Responder: for a request of ``exchange``, the registry (``ike/tasks/__init__.py``)
  picks the first registered task class whose ``matches(payloads)`` is true and calls
  its ``respond``.

Tasks get an ``IKEContext``, never the engine.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pypluto.iana import ExchangeType
from pypluto.ike.actions import Action, Endpoint
from pypluto.ike.context import IKEContext
from pypluto.ike.sa import IKESA
from pypluto.wire.payloads import Payload


@dataclass(slots=True)
class Inbound:
    """A response as the task manager hands it to ``Task.on_response``.

    ``payloads`` are the decrypted inner payloads (or the clear ones of IKE_SA_INIT);
    ``data`` and ``spi_r`` are the datagram and the responder SPI (IKE_SA_INIT needs
    both: AUTH signs that message, RFC 7296 §2.15).
    """

    payloads: list[Payload]
    data: bytes = b""
    spi_r: bytes = b""


@dataclass(slots=True)
class Request:
    """A request from the peer, in order and decrypted, for ``Task.respond``."""

    msgid: int
    payloads: list[Payload]
    local: Endpoint
    remote: Endpoint


class Task(ABC):
    """One exchange on one IKE SA, initiator and responder side."""

    exchange: ClassVar[ExchangeType]
    # a liveness check: its retransmit timeout is capped by dpdtimeout (RFC 7296 §2.4)
    liveness: ClassVar[bool] = False

    @abstractmethod
    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        """The request's payloads, or None when there is nothing to send any more."""

    @abstractmethod
    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        """The peer answered our request."""

    @abstractmethod
    def on_timeout(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        """No answer after every retransmit (RFC 7296 §2.1, §2.4)."""

    def abandon(self, ctx: IKEContext, ike: IKESA) -> None:  # noqa: B027 - optional hook
        """The IKE SA goes away with this task queued or in flight: release reservations."""

    def peer_deletes(self, spi: int) -> bool:
        """The peer's Delete names ``spi``, which no Child SA of ours has: is it maybe
        the one this exchange in flight makes (kept, then, so that it is not
        installed)?"""
        return False

    def restart(self, ctx: IKEContext, ike: IKESA) -> Task | None:
        """A Child SA exchange queued or in flight on ``ike``, whose Child SAs went to
        another IKE SA (``child_delete.hand_over``): the same exchange afresh, to start
        there (what it reserved on ``ike`` released).  None: not a Child SA exchange."""
        return None

    @classmethod
    def matches(cls, payloads: Sequence[Payload]) -> bool:
        """Responder: is this request of ``exchange`` for this task?"""
        return False

    @classmethod
    def respond(cls, ctx: IKEContext, ike: IKESA, req: Request, now: float) -> list[Action]:
        """Responder: process the request and answer it (``ctx.send_response``)."""
        raise NotImplementedError(cls.__name__)
