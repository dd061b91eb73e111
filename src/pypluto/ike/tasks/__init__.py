"""The exchanges of IKEv2, one task class per concern (``base.Task``), and their registry.

``RESPONDERS`` lists, per exchange type, the task classes that answer requests, in
the order they are asked (``matches``): the first that claims a request handles it.
A new exchange is one module with a ``Task`` subclass, added here.  IKE_SA_INIT
requests arrive before an IKE SA exists and go to ``ike_init.respond_new``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pypluto.ike.codec import Payload
from pypluto.ike.tasks.auth_failed import AuthFailedNotice
from pypluto.ike.tasks.base import Task
from pypluto.ike.tasks.child_create import ChildCreate
from pypluto.ike.tasks.child_delete import ChildDelete
from pypluto.ike.tasks.child_rekey import ChildRekey
from pypluto.ike.tasks.ike_auth import IKEAuth
from pypluto.ike.tasks.ike_delete import IKEDelete
from pypluto.ike.tasks.ike_followup import FollowupKE
from pypluto.ike.tasks.ike_init import IKEInit
from pypluto.ike.tasks.ike_intermediate import IKEIntermediate
from pypluto.ike.tasks.ike_rekey import IKERekey
from pypluto.ike.tasks.liveness import Liveness
from pypluto.ike.tasks.mobike import MobikeUpdate, ReturnRoutability
from pypluto.ike.tasks.redirect import Redirected

__all__ = ["Task", "IKEInit", "IKEAuth", "ChildCreate", "ChildRekey", "IKERekey",
           "ChildDelete", "IKEDelete", "Liveness", "MobikeUpdate", "ReturnRoutability",
           "Redirected", "IKEIntermediate", "FollowupKE", "AuthFailedNotice", "RESPONDERS", "responder_for"]

# Responders in the order they are asked; the last of each exchange claims the rest.
REGISTRY: tuple[type[Task], ...] = (
    IKEAuth,
    IKEIntermediate,  # RFC 9242
    IKERekey, ChildRekey, ChildCreate,  # CREATE_CHILD_SA
    IKEDelete, ChildDelete, MobikeUpdate, ReturnRoutability, Redirected,
    AuthFailedNotice, Liveness,  # INFORMATIONAL
    FollowupKE,  # RFC 9370
)

RESPONDERS: dict[int, tuple[type[Task], ...]] = {}
for _cls in REGISTRY:
    RESPONDERS[int(_cls.exchange)] = RESPONDERS.get(int(_cls.exchange), ()) + (_cls,)


def responder_for(exchange: int, payloads: Sequence[Payload]) -> type[Task] | None:
    """The task class that answers this request, or None (an unsupported exchange)."""
    for cls in RESPONDERS.get(exchange, ()):
        if cls.matches(payloads):
            return cls
    return None
