"""NSS's soft token (``libsoftokn3.so``) through its PKCS#11 interface, with ``ctypes``.

Libreswan keeps raw host keys (``ipsec newhostkey``) as key-only entries in its NSS
database, found by their CKAID (``CKA_ID``); NSS's command-line tools can export a key
only together with a certificate.  This module opens the database through NSS's own
PKCS#11 module (PKCS#11 v2.40 §5: ``C_Initialize`` with NSS's module parameters
``configdir='sql:DIR'``, ``C_OpenSession``, ``C_Login`` with the database password),
lists the private keys (their ``CKA_ID``, type and public parts) and exports one as a
PKCS#8 ``PrivateKeyInfo`` wrapped (``C_WrapKey``, ``CKM_AES_CBC_PAD``) under a random
session key, which ``cryptography`` unwraps: the same hand-over as ``pk12util`` does for
keys with a certificate.  NSS's database format and key encryption are never touched.

Each call opens the module, does its work and finalizes it, so several databases can
be read in turn by one process; a lock keeps threads apart.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from dataclasses import dataclass

from cryptography.hazmat.primitives import padding as sympad
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import load_der_private_key

CK_ULONG = ctypes.c_ulong
CK_RV = CK_ULONG
_P = ctypes.c_void_p

# PKCS#11 v2.40 constants
CKR_OK = 0
CKR_PIN_INCORRECT = 0xA0
CKR_PIN_LEN_RANGE = 0xA2
CKR_USER_ALREADY_LOGGED_IN = 0x100
CKR_USER_PIN_NOT_INITIALIZED = 0x102
CKF_OS_LOCKING_OK = 0x2
CKF_SERIAL_SESSION = 0x4
CKF_LOGIN_REQUIRED = 0x4
CKF_USER_PIN_INITIALIZED = 0x8
CKU_USER = 1
CKA_CLASS = 0x0
CKA_TOKEN = 0x1
CKA_VALUE = 0x11
CKA_KEY_TYPE = 0x100
CKA_ID = 0x102
CKA_WRAP = 0x106
CKA_MODULUS = 0x120
CKA_PUBLIC_EXPONENT = 0x122
CKA_EC_PARAMS = 0x180
CKO_PRIVATE_KEY = 3
CKO_SECRET_KEY = 4
CKK_RSA = 0
CKK_EC = 3
CKK_AES = 0x1F
CKM_AES_CBC_PAD = 0x1085

_KEY_TYPES = {CKK_RSA: "rsa", CKK_EC: "ec"}


class PKCS11Error(Exception):
    """The soft token refused; the text names the step and the PKCS#11 error."""

    def __init__(self, text: str, rv: int = 0) -> None:
        super().__init__(text)
        self.rv = rv


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


_NAMES = ("Initialize Finalize GetInfo GetFunctionList GetSlotList GetSlotInfo GetTokenInfo "
          "GetMechanismList GetMechanismInfo InitToken InitPIN SetPIN OpenSession "
          "CloseSession CloseAllSessions GetSessionInfo GetOperationState SetOperationState "
          "Login Logout CreateObject CopyObject DestroyObject GetObjectSize GetAttributeValue "
          "SetAttributeValue FindObjectsInit FindObjects FindObjectsFinal EncryptInit Encrypt "
          "EncryptUpdate EncryptFinal DecryptInit Decrypt DecryptUpdate DecryptFinal "
          "DigestInit Digest DigestUpdate DigestKey DigestFinal SignInit Sign SignUpdate "
          "SignFinal SignRecoverInit SignRecover VerifyInit Verify VerifyUpdate VerifyFinal "
          "VerifyRecoverInit VerifyRecover DigestEncryptUpdate DecryptDigestUpdate "
          "SignEncryptUpdate DecryptVerifyUpdate GenerateKey GenerateKeyPair WrapKey UnwrapKey "
          "DeriveKey SeedRandom GenerateRandom GetFunctionStatus CancelFunction "
          "WaitForSlotEvent").split()


class _FunctionList(ctypes.Structure):
    _fields_ = [("version", _Version)] + [("C_" + n, _P) for n in _NAMES]


class _InitArgs(ctypes.Structure):
    _fields_ = [("CreateMutex", _P), ("DestroyMutex", _P), ("LockMutex", _P),
                ("UnlockMutex", _P), ("flags", CK_ULONG), ("pReserved", ctypes.c_char_p)]


class _Attribute(ctypes.Structure):
    _fields_ = [("type", CK_ULONG), ("pValue", _P), ("ulValueLen", CK_ULONG)]


class _Mechanism(ctypes.Structure):
    _fields_ = [("mechanism", CK_ULONG), ("pParameter", _P), ("ulParameterLen", CK_ULONG)]


class _TokenInfo(ctypes.Structure):
    _fields_ = [("label", ctypes.c_char * 32), ("manufacturerID", ctypes.c_char * 32),
                ("model", ctypes.c_char * 16), ("serialNumber", ctypes.c_char * 16),
                ("flags", CK_ULONG), ("ulMaxSessionCount", CK_ULONG),
                ("ulSessionCount", CK_ULONG), ("ulMaxRwSessionCount", CK_ULONG),
                ("ulRwSessionCount", CK_ULONG), ("ulMaxPinLen", CK_ULONG),
                ("ulMinPinLen", CK_ULONG), ("ulTotalPublicMemory", CK_ULONG),
                ("ulFreePublicMemory", CK_ULONG), ("ulTotalPrivateMemory", CK_ULONG),
                ("ulFreePrivateMemory", CK_ULONG), ("hardwareVersion", _Version),
                ("firmwareVersion", _Version), ("utcTime", ctypes.c_char * 16)]


@dataclass(frozen=True)
class TokenKey:
    """A private key of the database: its CKAID (hex), type and public parts."""

    ckaid: str
    kind: str  # "rsa" | "ec"
    modulus: bytes = b""
    exponent: bytes = b""
    ec_params: bytes = b""


_LOCK = threading.Lock()
_LIB: ctypes.CDLL | None = None


def _library() -> ctypes.CDLL:
    global _LIB
    if _LIB is None:
        names = ["libsoftokn3.so", "/usr/lib/x86_64-linux-gnu/libsoftokn3.so",
                 "/usr/lib/x86_64-linux-gnu/nss/libsoftokn3.so", "/usr/lib64/libsoftokn3.so"]
        found = ctypes.util.find_library("softokn3")
        if found:
            names.insert(0, found)
        for n in names:
            try:
                _LIB = ctypes.CDLL(n)
                break
            except OSError:
                continue
        else:
            raise PKCS11Error("NSS's soft token libsoftokn3.so not found (install libnss3)")
    return _LIB


def token_name(fips: bool = False) -> str:
    """The token name Libreswan's ``nsspassword`` lines start with."""
    return "NSS FIPS 140-2 Certificate DB" if fips else "NSS Certificate DB"


class Token:
    """One open session on the database token of ``directory`` (use with ``with``)."""

    def __init__(self, directory: str, password: str | None = None) -> None:
        if not os.path.exists(os.path.join(directory, "key4.db")):
            raise PKCS11Error(f"no NSS database (key4.db) in {directory}")
        self.directory = directory
        self.password = password
        self.label = ""
        self._fl: _FunctionList | None = None
        self._session = CK_ULONG(0)

    # -- plumbing
    def _fn(self, name: str, *argtypes: object) -> ctypes._CFuncPtr:  # type: ignore[name-defined]
        assert self._fl is not None
        addr = getattr(self._fl, "C_" + name)
        proto = ctypes.CFUNCTYPE(CK_RV, *argtypes)  # type: ignore[arg-type]
        return proto(addr)

    def _call(self, name: str, argtypes: tuple[object, ...], *args: object) -> None:
        rv = int(self._fn(name, *argtypes)(*args))
        if rv != CKR_OK:
            raise PKCS11Error(f"C_{name} failed: CKR 0x{rv:x}", rv)

    def __enter__(self) -> Token:
        _LOCK.acquire()
        try:
            self._open()
        except BaseException:
            self._close()
            _LOCK.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._close()
        finally:
            _LOCK.release()

    def _open(self) -> None:
        lib = _library()
        getfl = lib.C_GetFunctionList
        getfl.restype = CK_RV
        getfl.argtypes = [ctypes.POINTER(ctypes.POINTER(_FunctionList))]
        flp = ctypes.POINTER(_FunctionList)()
        rv = getfl(ctypes.byref(flp))
        if rv != CKR_OK:
            raise PKCS11Error(f"C_GetFunctionList failed: CKR 0x{rv:x}", rv)
        self._fl = flp.contents
        d = self.directory.replace("'", "")
        params = (f"configdir='sql:{d}' certPrefix='' keyPrefix='' secmod='secmod.db' "
                  "flags='readOnly,noModDB'").encode()
        args = _InitArgs(None, None, None, None, CKF_OS_LOCKING_OK, params)
        self._args = args  # keep alive
        rv = int(self._fn("Initialize", _P)(ctypes.cast(ctypes.byref(args), _P)))
        if rv != CKR_OK:
            self._fl = None
            raise PKCS11Error(f"cannot open the NSS database {self.directory}: "
                              f"C_Initialize CKR 0x{rv:x}", rv)
        slot = self._db_slot()
        self._call("OpenSession", (CK_ULONG, CK_ULONG, _P, _P, ctypes.POINTER(CK_ULONG)),
                   slot, CKF_SERIAL_SESSION, None, None, ctypes.byref(self._session))
        if self._login_needed:
            if not self.password:
                raise PKCS11Error(f"the NSS database {self.directory} (token "
                                  f"\"{self.label}\") needs a password and none is configured")
            pw = self.password.encode()
            rv = int(self._fn("Login", CK_ULONG, CK_ULONG, ctypes.c_char_p, CK_ULONG)(
                self._session, CKU_USER, pw, len(pw)))
            if rv in (CKR_PIN_INCORRECT, CKR_PIN_LEN_RANGE):
                raise PKCS11Error(f"wrong password for the NSS database {self.directory} "
                                  f"(token \"{self.label}\")", rv)
            if rv not in (CKR_OK, CKR_USER_ALREADY_LOGGED_IN):
                raise PKCS11Error(f"login to the NSS database {self.directory} failed: "
                                  f"CKR 0x{rv:x}", rv)

    def _db_slot(self) -> int:
        count = CK_ULONG(0)
        self._call("GetSlotList", (ctypes.c_ubyte, _P, ctypes.POINTER(CK_ULONG)), 1, None,
                   ctypes.byref(count))
        slots = (CK_ULONG * count.value)()
        self._call("GetSlotList", (ctypes.c_ubyte, _P, ctypes.POINTER(CK_ULONG)), 1,
                   ctypes.cast(slots, _P), ctypes.byref(count))
        for s in slots[:count.value]:
            info = _TokenInfo()
            self._call("GetTokenInfo", (CK_ULONG, ctypes.POINTER(_TokenInfo)), s,
                       ctypes.byref(info))
            label = info.label.decode("utf-8", "replace").rstrip()
            if "Certificate DB" in label:
                self.label = label
                self._login_needed = bool(info.flags & CKF_LOGIN_REQUIRED) and bool(
                    info.flags & CKF_USER_PIN_INITIALIZED)
                return int(s)
        raise PKCS11Error(f"no database token in {self.directory}")

    def _close(self) -> None:
        if self._fl is None:
            return
        try:
            if self._session.value:
                self._fn("CloseSession", CK_ULONG)(self._session)
            self._fn("Finalize", _P)(None)
        finally:
            self._fl = None
            self._session = CK_ULONG(0)

    def _find(self, template: list[tuple[int, bytes]]) -> list[int]:
        attrs, keep = _template(template)
        self._call("FindObjectsInit", (CK_ULONG, _P, CK_ULONG), self._session,
                   ctypes.cast(attrs, _P), len(template))
        res: list[int] = []
        try:
            buf = (CK_ULONG * 32)()
            n = CK_ULONG(0)
            while True:
                self._call("FindObjects", (CK_ULONG, _P, CK_ULONG, ctypes.POINTER(CK_ULONG)),
                           self._session, ctypes.cast(buf, _P), 32, ctypes.byref(n))
                if n.value == 0:
                    break
                res += [int(x) for x in buf[:n.value]]
        finally:
            self._fn("FindObjectsFinal", CK_ULONG)(self._session)
        del keep
        return res

    def _attr(self, obj: int, kind: int) -> bytes:
        a = _Attribute(kind, None, 0)
        rv = int(self._fn("GetAttributeValue", CK_ULONG, CK_ULONG, _P, CK_ULONG)(
            self._session, obj, ctypes.cast(ctypes.byref(a), _P), 1))
        if rv != CKR_OK or a.ulValueLen == CK_ULONG(-1).value:
            return b""
        buf = ctypes.create_string_buffer(a.ulValueLen)
        a.pValue = ctypes.cast(buf, _P)
        self._call("GetAttributeValue", (CK_ULONG, CK_ULONG, _P, CK_ULONG), self._session,
                   obj, ctypes.cast(ctypes.byref(a), _P), 1)
        return buf.raw[:a.ulValueLen]

    # -- what callers use
    def private_keys(self) -> list[TokenKey]:
        """Every private key of the database (``certutil -K`` lists the same)."""
        res = []
        for obj in self._find([(CKA_CLASS, _ul(CKO_PRIVATE_KEY))]):
            kt = int.from_bytes(self._attr(obj, CKA_KEY_TYPE) or b"\xff" * 8, "little")
            kind = _KEY_TYPES.get(kt, f"type{kt}")
            ckaid = self._attr(obj, CKA_ID).hex()
            if kind == "rsa":
                res.append(TokenKey(ckaid, kind, self._attr(obj, CKA_MODULUS),
                                    self._attr(obj, CKA_PUBLIC_EXPONENT)))
            else:
                res.append(TokenKey(ckaid, kind, ec_params=self._attr(obj, CKA_EC_PARAMS)))
        return res

    def export_key(self, ckaid: str) -> PrivateKeyTypes:
        """The private key whose ``CKA_ID`` is ``ckaid`` (hex), for ``cryptography``."""
        try:
            want = bytes.fromhex(ckaid)
        except ValueError:
            raise PKCS11Error(f"bad CKAID '{ckaid}'") from None
        objs = self._find([(CKA_CLASS, _ul(CKO_PRIVATE_KEY)), (CKA_ID, want)])
        if not objs:
            raise PKCS11Error(f"no private key with CKAID {ckaid} in the NSS database "
                              f"{self.directory}")
        kek = os.urandom(32)
        tmpl, keep = _template([(CKA_CLASS, _ul(CKO_SECRET_KEY)), (CKA_KEY_TYPE, _ul(CKK_AES)),
                                (CKA_TOKEN, b"\0"), (CKA_WRAP, b"\1"), (CKA_VALUE, kek)])
        wrapper = CK_ULONG(0)
        self._call("CreateObject", (CK_ULONG, _P, CK_ULONG, ctypes.POINTER(CK_ULONG)),
                   self._session, ctypes.cast(tmpl, _P), 5, ctypes.byref(wrapper))
        del keep
        try:
            iv = os.urandom(16)
            ivbuf = ctypes.create_string_buffer(iv, 16)
            mech = _Mechanism(CKM_AES_CBC_PAD, ctypes.cast(ivbuf, _P), 16)
            n = CK_ULONG(0)
            argt = (CK_ULONG, _P, CK_ULONG, CK_ULONG, _P, ctypes.POINTER(CK_ULONG))
            self._call("WrapKey", argt, self._session, ctypes.cast(ctypes.byref(mech), _P),
                       wrapper, objs[0], None, ctypes.byref(n))
            out = ctypes.create_string_buffer(n.value)
            self._call("WrapKey", argt, self._session, ctypes.cast(ctypes.byref(mech), _P),
                       wrapper, objs[0], ctypes.cast(out, _P), ctypes.byref(n))
            wrapped = out.raw[:n.value]
        finally:
            self._fn("DestroyObject", CK_ULONG, CK_ULONG)(self._session, wrapper)
        dec = Cipher(algorithms.AES(kek), modes.CBC(iv)).decryptor()
        padded = dec.update(wrapped) + dec.finalize()
        unp = sympad.PKCS7(128).unpadder()
        der = unp.update(padded) + unp.finalize()
        return load_der_private_key(der, None)


def _ul(v: int) -> bytes:
    return v.to_bytes(ctypes.sizeof(CK_ULONG), "little")


def _template(items: list[tuple[int, bytes]]) -> tuple[ctypes.Array[_Attribute], list[object]]:
    arr = (_Attribute * len(items))()
    keep: list[object] = []
    for i, (t, v) in enumerate(items):
        b = ctypes.create_string_buffer(v, len(v))
        keep.append(b)
        arr[i].type = t
        arr[i].pValue = ctypes.cast(b, _P)
        arr[i].ulValueLen = len(v)
    return arr, keep
