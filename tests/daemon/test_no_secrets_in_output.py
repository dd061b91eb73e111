""""Secrets never reach a log": proved end to end with the real key material.

Every secret the engines derive or load is recorded as it is made (wrappers around
``crypto.keys``, the DH/ECDH ``finish`` methods and ``ike.ppk.apply_ppk``), then every
text pypluto can show is searched for it:

* engine level: two engines back to back (``tests/ike/harness.py``) through PSK auth,
  a Child SA, a Child SA rekey with PFS, an IKE SA rekey, a delete, a PPK and a wrong
  PSK; every ``Log`` (every level, so every debug class), the lines a ``PlutoLogger``
  with every debug class (``private`` too) writes of them, the engine status as
  dataclasses and JSON, and the ``repr`` of every action and SA object;
* daemon level: two in-process daemons on loopback, ``plutodebug=all`` plus
  ``private``, a tunnel up, rekeyed and torn down; every whack status command (text and
  JSON), ``--listpsks``, the log file, the audit lines and the metrics endpoint;
* error paths: bad secrets lines, an internal error's crash report, an exception whose
  text holds the ``repr`` of the SA objects.

A secret is looked for as raw text (the PSKs and PPKs), as hex (lower/upper case,
bare or with ``:`` / space / ``-`` between bytes, and any 8-byte window of it), as
base64 (standard and URL-safe, padded or not), as a Python bytes repr and, for DH
private values, as a decimal integer.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import socket
import sys
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from inproc import free_port
from testsupport import REPO

from pypluto.config.secrets import load_secrets, parse_secrets_text
from pypluto.control.client import call
from pypluto.crypto import dh, keys
from pypluto.daemon.logger import DEBUG_CLASSES, PlutoLogger
from pypluto.daemon.options import PlutoOptions
from pypluto.daemon.server import Daemon
from pypluto.ike import ppk as ppkmod
from pypluto.ike.actions import AddSA, Log
from pypluto.ike.engine import Engine

sys.path.insert(0, str(REPO / "tests"))
from ike.harness import Net  # noqa: E402

PSK = b"Zq7-psk-NEVER-in-a-log-9f3Kx!"
WRONG_PSK = b"Wr0ng-psk-also-NEVER-logged-44"
PPK = b"Pq-ppk-NEVER-in-a-log-0123456789abc"
XAUTH = b"Xa-password-NEVER-logged-5544"
NSS_PASSWORD = b"Nss-db-password-NEVER-logged-31"


# ----------------------------------------------------------------------------- finding
class Secrets:
    """Secret byte strings, and the forms in which each must never appear."""

    def __init__(self) -> None:
        self.values: dict[bytes, str] = {}  # value -> what it is
        self.ints: dict[int, str] = {}  # DH private values, for their decimal form

    def add(self, what: str, value: bytes | None) -> None:
        if value and len(value) >= 8:  # shorter "keys" are no key (none of ours is)
            self.values.setdefault(bytes(value), what)

    def add_int(self, what: str, value: int) -> None:
        if value > 2 ** 64:
            self.ints[value] = what
            self.add(what, value.to_bytes((value.bit_length() + 7) // 8, "big"))

    def kinds(self) -> set[str]:
        return {w.split(" ")[0] for w in self.values.values()}

    def find(self, text: str) -> list[str]:
        """Which secrets ``text`` shows, and how; [] when none."""
        found: list[str] = []
        low = text.lower()
        squeezed = re.sub(r"[\s:\-_.,]", "", low)  # hex with any byte separator
        for v, what in self.values.items():
            h = v.hex()
            b64 = base64.b64encode(v).decode()
            forms = {
                "raw": v.decode("latin-1"),
                "base64": b64.rstrip("="),
                "base64url": base64.urlsafe_b64encode(v).decode().rstrip("="),
                "bytes repr": repr(v)[2:-1],
            }
            for name, form in forms.items():
                if len(form) >= 8 and form in text:
                    found.append(f"{what} as {name}")
            if h in squeezed:
                found.append(f"{what} as hex")
            else:  # any 8 bytes of it (a key printed in part, or over several lines)
                for i in range(0, len(v) - 7):
                    if h[2 * i:2 * i + 16] in squeezed:
                        found.append(f"{what} as hex (bytes {i}..{i + 7})")
                        break
            if all(32 <= c < 127 for c in v):  # a text secret: any 10 characters of it
                s = v.decode()
                for i in range(0, max(1, len(s) - 9)):
                    if s[i:i + 10] in text:
                        found.append(f"{what} as text ({s[i:i + 10]!r})")
                        break
        for n, what in self.ints.items():
            if str(n) in text:
                found.append(f"{what} as decimal")
        return found

    def assert_absent(self, texts: Iterable[str], where: str) -> None:
        text = "\n".join(texts)
        assert text, f"nothing to search in {where}"
        leaks = self.find(text)
        assert not leaks, f"secrets in {where}: {leaks}"


def forms_of(v: bytes) -> list[str]:
    """The encodings the finder knows (for its own self-test)."""
    h = v.hex()
    return [h, h.upper(), ":".join(h[i:i + 2] for i in range(0, len(h), 2)),
            " ".join(h[i:i + 2].upper() for i in range(0, len(h), 2)),
            base64.b64encode(v).decode(), base64.urlsafe_b64encode(v).decode().rstrip("="),
            repr(v), "SK_d: " + h[:20] + "...", "0x" + h[6:30]]


def test_the_finder_finds_every_encoding() -> None:
    s = Secrets()
    key = bytes(range(200, 232))
    s.add("SK_d", key)
    s.add("PSK", PSK)
    s.add_int("DH private", 2 ** 200 + 12345)
    for form in forms_of(key):
        assert s.find(f"line: {form} end"), form
    assert s.find(f"psk is {PSK.decode()}") and s.find("x Zq7-psk-NEVER y")
    assert s.find(str(2 ** 200 + 12345))
    assert not s.find("nothing secret here: 0011223344 " + bytes(range(8)).hex())


# ---------------------------------------------------------------------------- recording
def record_secrets(monkeypatch: pytest.MonkeyPatch, s: Secrets) -> None:
    """Record every secret the engines make, as they make it."""

    def wrap(mod: Any, name: str, after: Callable[[Any, tuple[Any, ...]], None]) -> None:
        orig = getattr(mod, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            out = orig(*a, **k)
            after(out, a)
            return out

        monkeypatch.setattr(mod, name, wrapper)

    def ike_keys(k: keys.IKEKeys, _a: tuple[Any, ...]) -> None:
        for f in ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"):
            s.add(f.upper(), getattr(k, f))

    def child_keys(k: keys.ChildKeys, a: tuple[Any, ...]) -> None:
        for f in ("encr_i", "integ_i", "encr_r", "integ_r"):
            s.add(f"KEYMAT {f}", getattr(k, f))

    wrap(keys, "skeyseed", lambda out, a: s.add("SKEYSEED", out))
    wrap(keys, "rekey_skeyseed", lambda out, a: s.add("SKEYSEED (rekey)", out))
    wrap(keys, "derive_ike_keys", ike_keys)
    wrap(keys, "derive_child_keys", child_keys)

    def applied(k: keys.IKEKeys, a: tuple[Any, ...]) -> None:
        s.add("PPK", a[1])
        ike_keys(k, a)

    wrap(ppkmod, "apply_ppk", applied)

    def dh_finish(cls: type, private: Callable[[Any], None]) -> None:
        orig = cls.finish

        def finish(self: Any, peer: bytes) -> bytes:
            shared = orig(self, peer)
            s.add("g^ir", shared)
            private(self)
            return shared

        monkeypatch.setattr(cls, "finish", finish)

    def modp_private(ke: Any) -> None:
        if ke._key is not None:
            s.add_int("DH private", ke._key.private_numbers().x)
        elif ke._x:
            s.add_int("DH private", ke._x)

    def ecx_private(ke: Any) -> None:
        for cell in ke._exchange.__closure__ or ():
            s.add("DH private", cell.cell_contents.private_bytes_raw())

    dh_finish(dh.ModpKE, modp_private)
    dh_finish(dh.EcpKE, lambda ke: s.add_int("DH private",
                                              ke._key.private_numbers().private_value))
    dh_finish(dh.EcxKE, ecx_private)


def sa_secrets(engine: Engine, s: Secrets) -> None:
    """The keys the engine's SA objects hold now (besides those recorded as made)."""
    for ike in list(engine.by_serial.values()):
        if not hasattr(ike, "sk_d"):
            continue
        for f in ("sk_d", "sk_pi", "sk_pr"):
            s.add(f.upper() + " (IKESA)", getattr(ike, f))
        for prot in (ike.prot_in, ike.prot_out):
            if prot is not None:
                s.add("SK_e (protector)", prot._encr_key)
                s.add("SK_a (protector)", prot._integ_key)
        for c in ike.children:
            if c.keys is not None:
                for f in ("encr_i", "integ_i", "encr_r", "integ_r"):
                    s.add(f"KEYMAT {f} (ChildSA)", getattr(c.keys, f))
    s.add("cookie secret", engine.dos.secret)
    s.add("cookie secret", engine.dos.prev)


# ------------------------------------------------------------------------ engine level
SECRETS_TEXT = (f'@west.example @east.example : PSK "{PSK.decode()}"\n'
                f'@west.example @east.example : PPKS "ppk-a" "{PPK.decode()}"\n'
                f'@alice : XAUTH "{XAUTH.decode()}"\n')


def texts_of(net: Net, log_path: Path) -> list[str]:
    """Everything the pair can show: log texts, logger lines, status, reprs."""
    out: list[str] = []
    logger = PlutoLogger(logfile=str(log_path), logtime=False,
                         debug=set(DEBUG_CLASSES))  # every class, 'private' included
    for side in (net.west, net.east):
        for a in side.actions:
            out.append(repr(a))
            if isinstance(a, Log):
                out += [a.message, a.traceback]
                logger.log(a.message, a.level, conn=a.conn, serial=a.serial,
                           remote=a.remote, debug_class=a.debug_class)
            if isinstance(a, AddSA):
                out.append(str(a.sa))
        st = side.engine.status(net.now)
        out.append(repr(st))
        out.append(json.dumps(dataclasses.asdict(st), default=str))
        out.append(repr(side.engine.secrets))
        out += [repr(x) for x in side.engine.secrets.secrets]
    logger.close()
    out.append(log_path.read_text())
    return out


def make_net(**kw: Any) -> Net:
    net = Net(west_psk=PSK, east_psk=PSK, **kw)
    for side in (net.west, net.east):
        store = parse_secrets_text(SECRETS_TEXT)
        assert store.ok, store.diagnostics
        side.engine.secrets = store
    return net


def test_engine_pair_every_exchange_no_secret_in_any_output(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = Secrets()
    s.add("PSK", PSK)
    s.add("PPK", PPK)
    s.add("XAUTH password", XAUTH)
    record_secrets(monkeypatch, s)
    kw = {"esp": "aes_gcm256-dh19", "ike": "aes256-sha2_256-modp2048", "ppk": "propose",
          "ppk_ids": [b"ppk-a"]}
    net = make_net(west_kw=kw, east_kw=kw)
    net.up()
    assert net.established(net.west) and net.children(net.east), net.west.logs()
    assert any("mixed with PPK" in m for m in net.west.logs()), net.west.logs()

    def snap() -> None:  # the keys the SAs hold now
        for side in (net.west, net.east):
            sa_secrets(side.engine, s)

    snap()
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))  # PFS rekey
    net.run()
    snap()
    net.apply(net.east, net.east.engine.rekey_ike("west-east", net.now))
    net.run()
    snap()
    net.advance(30)  # liveness, retransmit timers
    snap()
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))  # delete
    net.run()
    assert not net.west.engine.by_serial and not net.east.engine.by_serial
    # the key material really was made, of every kind
    assert {"SKEYSEED", "SK_D", "SK_AI", "SK_EI", "SK_PI", "KEYMAT", "g^ir", "DH",
            "PPK", "PSK"} <= s.kinds(), s.kinds()
    assert len([w for w in s.values.values() if w.startswith("g^ir")]) >= 3  # INIT, PFS, rekey
    texts = texts_of(net, tmp_path / "log")
    assert any(t.startswith("| ") for t in (tmp_path / "log").read_text().splitlines())
    s.assert_absent(texts, "the engines' logs, status and actions")


def test_engine_wrong_psk_no_secret_in_any_output(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = Secrets()
    s.add("PSK", PSK)
    s.add("PSK (the peer's)", WRONG_PSK)
    record_secrets(monkeypatch, s)
    net = make_net()
    store = parse_secrets_text(f'@west.example @east.example : PSK "{WRONG_PSK.decode()}"\n')
    net.east.engine.secrets = store
    net.up()
    assert not net.established(net.west) and not net.established(net.east)
    assert any("AUTHENTICATION_FAILED" in m for m in net.west.logs()), net.west.logs()
    for side in (net.west, net.east):
        sa_secrets(side.engine, s)
    assert "SK_PI" in s.kinds()
    s.assert_absent(texts_of(net, tmp_path / "log"), "a failed authentication's output")


def test_private_debug_class_is_accepted_but_never_by_all() -> None:
    """Libreswan's ``private`` class (``--debug private``, ``plutodebug=private``) is
    accepted and listed by ``--debug help``; ``all`` leaves it out.  pypluto logs no line
    in it (nor in ``crypt``): the tests above turn it on and find no key."""
    from pypluto.daemon.logger import debug_help, parse_debug_specs

    assert "private" in parse_debug_specs(["private"], set())
    assert "private" not in parse_debug_specs(["all"], set())
    assert "private" in debug_help()
    src = (REPO / "src" / "pypluto")
    users = [p for p in src.rglob("*.py")
             if re.search(r"debug_class=\"(private|crypt)\"|debugging\(\"(private|crypt)",
                          p.read_text())]
    assert users == [], users


# ------------------------------------------------------------------------ object reprs
def test_sa_objects_repr_shows_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever logs or raises with an SA object in it (an f-string, a traceback of an
    exception made from one) shows no key: the IKE SA's SK_d / SK_pi / SK_pr, its
    protectors, its Child SAs' KEYMAT and a pending key exchange's shared secrets."""
    from pypluto.ike.addke import Pending

    s = Secrets()
    record_secrets(monkeypatch, s)
    net = make_net(west_kw={"esp": "aes128-sha2_256"}, east_kw={"esp": "aes128-sha2_256"})
    net.up()
    for side in (net.west, net.east):
        sa_secrets(side.engine, s)
        for ike in side.engine.by_serial.values():
            assert ike.sk_d
            texts = [repr(ike), str(ike), f"{ike}", repr(ike.ppk), repr(ike.prot_in)]
            texts += [repr(c) for c in ike.children]
            s.assert_absent(texts, f"repr of IKE SA #{ike.serial}")
            try:  # an exception whose message holds the SA, formatted as a traceback is
                raise RuntimeError(f"broken state {ike!r}")
            except RuntimeError as e:
                import traceback
                s.assert_absent(traceback.format_exception(e), "a traceback naming the SA")
    shared = [v for v, w in s.values.items() if w == "g^ir"]
    p = Pending(link=b"link", todo=[31], shared=shared, finish=lambda *a: [])
    s.assert_absent([repr(p)], "repr of a pending IKE_FOLLOWUP_KE")


# ------------------------------------------------------------------------ secrets file
BAD_LINES = [
    '@west @east PSK "{v}"',  # no ':'
    '@west @east : "{v}" "{v}"',  # two values
    "@west @east : {v}",  # unquoted, kind forgotten
    "@west @east : PSK {v}",  # unquoted
    '@west @east : PSK "{v}',  # unterminated quote
    '@west @east : PSK 0x{h}zz',  # bad hex
    "@west @east : PSK 0s{b}!!",  # bad base64
    '@west @east : PPKS {v} "{v}"',  # unquoted PPK_ID
    '@west @east : XAUTH "{v}" x',
]


def test_bad_secrets_lines_never_echo_the_secret(tmp_path: Path) -> None:
    v = "SeCrEt-Never-Echo-1234567"
    h = v.encode().hex()
    b = base64.b64encode(v.encode()).decode()
    s = Secrets()
    s.add("PSK", v.encode())
    for line in BAD_LINES:
        text = line.format(v=v, h=h, b=b) + "\n"
        store = parse_secrets_text(text)
        assert not store.secrets and store.diagnostics, line
        diags = [str(d) for d in store.diagnostics] + [repr(store)]
        s.assert_absent(diags, f"diagnostics of {line!r}")
    # through a file and the daemon's own loader, logged by a PlutoLogger
    f = tmp_path / "ipsec.secrets"
    f.write_text("".join(ln.format(v=v, h=h, b=b) + "\n" for ln in BAD_LINES))
    f.chmod(0o600)
    store = load_secrets(str(f))
    assert store.diagnostics
    s.assert_absent([str(d) for d in store.diagnostics], "diagnostics of the file")


# ------------------------------------------------------------------------ daemon level
CONF = """\
config setup
\tplutodebug="all private"
\tmetrics-listen=127.0.0.1:{metrics}

conn pair
\tauthby=secret
\tleft=127.0.0.1
\tleftid=@{me}
\tleftsubnet={mine}
\tright=127.0.0.1
\trightid=@{peer}
\trightsubnet={theirs}
\trightikeport={peer_port}
\tppk=propose
\tike=aes256-sha2_256-modp2048
\tesp=aes_gcm256-dh19
\tauto=add
"""


async def whack(ctl: str, cmd: str, **args: Any) -> tuple[int, str]:
    out: list[str] = []
    loop = asyncio.get_running_loop()
    r = await asyncio.wait_for(
        loop.run_in_executor(None, lambda: call(ctl, cmd, args, on_output=out.append,
                                                timeout=30)), 60)
    text = "\n".join(out)
    if r.data is not None:
        text += "\n" + json.dumps(r.data)
    return r.rc, text


async def until(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait on the daemons' loop until ``cond()`` holds (a hang guard, not a delay)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)


def _tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pluto(tmp: Path, me: str, peer: str, mine: str, theirs: str, ports: tuple[int, int],
           peer_natport: int) -> Daemon:
    """One daemon as ``pluto --config ... --use-none`` would make it (the config's
    ``plutodebug="all private"``: every debug class, ``private`` too)."""
    from pypluto.daemon.options import parse_args

    tmp.mkdir()
    conf = tmp / "ipsec.conf"
    conf.write_text(CONF.format(me=me, peer=peer, mine=mine, theirs=theirs,
                                peer_port=peer_natport, metrics=_tcp_port()))
    sec = tmp / "ipsec.secrets"
    sec.write_text(f'@west @east : PSK "{PSK.decode()}"\n'
                   f'@carol : XAUTH "{XAUTH.decode()}"\n'
                   f'@west @east : PPKS "ppk-a" "{PPK.decode()}"\n'
                   f'@west @east : PSK {BAD_SECRET}\n')  # unquoted: a diagnostic
    sec.chmod(0o600)
    (tmp / "nsspassword").write_text(f"NSS Certificate DB:{NSS_PASSWORD.decode()}\n")
    kind, opts = parse_args(["--config", str(conf), "--secretsfile", str(sec), "--use-none",
                             "--rundir", str(tmp), "--coredir", str(tmp), "--ipsecdir",
                             str(tmp), "--nssdir", str(tmp), "--listen", "127.0.0.1",
                             "--ikeport", str(ports[0]), "--natikeport", str(ports[1]),
                             "--nhelpers", "0", "--logfile", str(tmp / "log"),
                             "--log-no-time"])
    assert kind == "run" and isinstance(opts, PlutoOptions)
    assert opts.debug == set(DEBUG_CLASSES), opts.debug  # 'private' included
    log = PlutoLogger(logfile=str(tmp / "log"), logtime=False, debug=opts.debug)
    return Daemon(opts, log)


def _ports() -> tuple[int, int]:
    a = free_port()
    b = free_port()
    while b == a:
        b = free_port()
    return a, b


BAD_SECRET = "Unquoted-bad-secret-NEVER-logged-77"


def test_daemon_pair_plutodebug_all_no_secret_in_any_output(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    s = Secrets()
    for what, v in (("PSK", PSK), ("PPK", PPK), ("XAUTH password", XAUTH),
                    ("bad PSK line", BAD_SECRET.encode()), ("NSS password", NSS_PASSWORD)):
        s.add(what, v)
    record_secrets(monkeypatch, s)
    wp, ep = _ports(), _ports()
    outputs: list[str] = []

    async def main() -> None:
        west = _pluto(tmp_path / "west", "west", "east", "198.51.100.0/24", "203.0.113.0/24",
                      wp, ep[1])
        east = _pluto(tmp_path / "east", "east", "west", "203.0.113.0/24", "198.51.100.0/24",
                      ep, wp[1])
        socks = []
        try:
            for d, tmp in ((west, tmp_path / "west"), (east, tmp_path / "east")):
                ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                socks.append(ctl)
                ctl.bind(str(tmp / "pluto.ctl"))
                ctl.listen(8)
                ctl.setblocking(False)
                await d.start(ctl)
            wctl, ectl = str(tmp_path / "west" / "pluto.ctl"), str(tmp_path / "east" /
                                                                   "pluto.ctl")
            rc, text = await whack(wctl, "initiate", name="pair")
            outputs.append(text)
            assert rc == 0, text + (tmp_path / "west" / "log").read_text()

            def established(d: Daemon) -> tuple[list[int], list[str]]:
                assert d.engine is not None
                st = d.engine.status(d.now())
                ikes = [i for i in st.ike_sas if i.state == "STATE_V2_ESTABLISHED_IKE_SA"]
                return [i.serial for i in ikes], [c.ke for i in ikes for c in i.children
                                                   if c.state == "STATE_V2_ESTABLISHED_CHILD_SA"]

            rc, text = await whack(wctl, "rekey-child", name="pair")  # with PFS (dh19)
            outputs.append(text)
            await until(lambda: established(west)[1] == ["ECP_256"]
                        and established(east)[1] == ["ECP_256"])
            rc, text = await whack(wctl, "rekey-ike", name="pair")
            outputs.append(text)
            await until(lambda: 1 not in established(west)[0] + established(east)[0]
                        and len(established(west)[0]) == len(established(east)[0]) == 1)

            def keys_now() -> None:
                for d in (west, east):
                    assert isinstance(d.engine, Engine)
                    sa_secrets(d.engine, s)

            keys_now()
            for ctl in (wctl, ectl):
                for cmd in ("status", "globalstatus", "showstates", "trafficstatus",
                            "briefstatus", "connectionstatus", "shuntstatus"):
                    for js in (False, True):
                        rc, text = await whack(ctl, cmd, json=js)
                        assert rc == 0, (cmd, text)
                        outputs.append(text)
                for cmd in ("listpsks", "listpubkeys", "listcrls", "rereadsecrets", "ping"):
                    rc, text = await whack(ctl, cmd)
                    outputs.append(text)
            for d in (west, east):
                assert d.metrics is not None
                url = f"http://{d.metrics.host}:{d.metrics.port}/metrics"
                body = await asyncio.get_running_loop().run_in_executor(
                    None, lambda u=url: urllib.request.urlopen(u, timeout=10).read())
                assert b"pluto" in body
                outputs.append(body.decode())
            status = json.loads((await whack(wctl, "status", json=True))[1])
            assert status["ike_sas"] and status["ike_sas"][0]["children"], status
            # internal errors whose text holds the IKE SA object (its repr): one in a
            # task of the engine (east answering a Child SA rekey: the engine's own crash
            # path), one out of an engine call the daemon makes (west, whack --rekey-ike)
            from pypluto.ike.sa import IKESA
            from pypluto.ike.tasks import child_rekey

            def boom(*a: Any, **k: Any) -> Any:
                ike = next(x for x in (*a, *k.values()) if isinstance(x, IKESA))
                raise RuntimeError(f"injected fault with {ike!r} in it")

            def boom_call(name: str, now: float) -> Any:
                assert isinstance(west.engine, Engine)
                raise RuntimeError(f"injected: {list(west.engine.by_serial.values())!r}")

            monkeypatch.setattr(child_rekey.ChildRekey, "respond", classmethod(boom))
            rc, text = await whack(wctl, "rekey-child", name="pair")
            outputs.append(text)
            await until(lambda: any((tmp_path / "east").glob("pluto-crash-*")))
            monkeypatch.setattr(west.engine, "rekey_ike", boom_call)
            rc, text = await whack(wctl, "rekey-ike", name="pair")
            outputs.append(text)
            await until(lambda: any((tmp_path / "west").glob("pluto-crash-*")))
            rc, text = await whack(wctl, "down", name="pair")
            outputs.append(text)
            await until(lambda: not established(west)[0])
        finally:
            for d in (west, east):
                await d.shutdown(finish=False)
                d.log.close()
            for c in socks:
                c.close()

    asyncio.run(main())
    logs = [(tmp_path / side / "log").read_text() for side in ("west", "east")]
    assert "| " in logs[0] and "AUDIT: " in logs[0], logs[0][-3000:]
    assert "established Child SA" in logs[0] and "rekey" in logs[0]
    assert "ipsec.secrets:4: a secret must be quoted" in logs[0]  # said, without the value
    assert "NSS Password from file" in logs[0]  # read and used, its length only logged
    assert {"SKEYSEED", "SK_D", "SK_EI", "KEYMAT", "g^ir", "DH"} <= s.kinds(), s.kinds()
    crash = [p.read_text() for side in ("west", "east")
             for p in (tmp_path / side).glob("pluto-crash-*")]
    assert len(crash) == 2 and all("injected" in c for c in crash), crash
    assert "injected fault with IKESA(" in logs[1] and "injected: [IKESA(" in logs[0]
    s.assert_absent(outputs + logs + crash, "the daemons' logs and whack outputs")
