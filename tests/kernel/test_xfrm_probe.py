"""Backend choice: --use-xfrm / --use-userspace / --use-none, or the kernel probe's pick."""

from __future__ import annotations

import pytest

from pypluto.kernel import probe
from pypluto.kernel.base import BackendError, KernelBackend
from pypluto.kernel.none import NoneBackend


def test_explicit_choice_none() -> None:
    backend, message = probe.choose_backend("none")
    assert isinstance(backend, NoneBackend) and "--use-none" in message


def test_unknown_choice_is_a_clear_error() -> None:
    with pytest.raises(BackendError, match="unknown kernel backend 'bsdkame'"):
        probe.choose_backend("bsdkame")


def test_userspace_class_is_found_by_its_name() -> None:
    cls = probe._find_backend_class("pypluto.kernel.userspace", "userspace")
    assert issubclass(cls, KernelBackend) and cls.name == "userspace"
    with pytest.raises(BackendError, match="not available"):
        probe._find_backend_class("pypluto.kernel.no_such_module", "userspace")


@pytest.mark.parametrize(
    ("esp_ok", "picked", "said"),
    [(True, "xfrm", "XFRM kernel backend"), (False, "userspace", "userspace ESP backend")],
)
def test_probe_decides(
    monkeypatch: pytest.MonkeyPatch, esp_ok: bool, picked: str, said: str
) -> None:
    made: list[str] = []

    def fake_make(kind: str) -> KernelBackend:
        made.append(kind)
        return NoneBackend()

    monkeypatch.setattr(probe, "probe_kernel_esp", lambda: (esp_ok, "the probe's reason"))
    monkeypatch.setattr(probe, "make_backend", fake_make)
    choice = probe.choose_backend(None)
    assert made == [picked]
    assert said in choice.message and "the probe's reason" in choice.message
