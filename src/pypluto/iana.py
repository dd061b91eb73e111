"""The IANA numbers of IKEv2: the bottom layer every other package may import.

One place for the values of the IANA "Internet Key Exchange Version 2 (IKEv2)
Parameters" registry: exchange types, payload types, notify types, ID types,
authentication methods, protocol IDs, traffic selector and configuration types,
certificate encodings, and the transform types with their transform IDs.

Values are from RFC 7296 §3 and the IANA registry, including the extensions named
per member (RFC 4555 MOBIKE, 4739 multiple auth, 5685 redirect, 5723 resumption,
6023 childless, 6311 message-ID sync, 7383 fragmentation, 7427 signature auth,
7619 NULL auth, 8019 puzzles, 8784 PPK, 9242 IKE_INTERMEDIATE, 9370 multiple key
exchanges, 9593 supported auth methods, ...).

This module imports nothing but the standard library (DESIGN.md "Import rules"):
``wire/``, ``crypto/``, ``ike/``, ``kernel/`` and ``config/`` all take their
numbers from here.  The algorithm table (names, sizes) stays in
``pypluto.crypto.registry``.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "ExchangeType",
    "PayloadType",
    "NotifyType",
    "IDType",
    "AuthMethod",
    "ProtocolID",
    "TSType",
    "CFGType",
    "CPAttr",
    "CertEncoding",
    "HashAlgorithm",
    "TransformAttr",
    "TransformType",
    "Encr",
    "Prf",
    "Integ",
    "KE",
    "ESN",
]


class ExchangeType(IntEnum):
    """Exchange types (RFC 7296 §3.1; 5723; 6407/G-IKEv2; 9242; 9370)."""

    IKE_SA_INIT = 34
    IKE_AUTH = 35
    CREATE_CHILD_SA = 36
    INFORMATIONAL = 37
    IKE_SESSION_RESUME = 38  # RFC 5723
    GSA_AUTH = 39  # G-IKEv2
    GSA_REGISTRATION = 40
    GSA_REKEY = 41
    GSA_INBAND_REKEY = 42
    IKE_INTERMEDIATE = 43  # RFC 9242
    IKE_FOLLOWUP_KE = 44  # RFC 9370


class PayloadType(IntEnum):
    """Next-payload values (RFC 7296 §3.2; 6467; G-IKEv2; 7383; 8019)."""

    NONE = 0
    SA = 33
    KE = 34
    IDi = 35
    IDr = 36
    CERT = 37
    CERTREQ = 38
    AUTH = 39
    NONCE = 40
    NOTIFY = 41
    DELETE = 42
    VENDOR = 43
    TSi = 44
    TSr = 45
    SK = 46
    CP = 47
    EAP = 48
    GSPM = 49  # RFC 6467
    IDg = 50  # G-IKEv2
    GSA = 51
    KD = 52
    SKF = 53  # RFC 7383
    PS = 54  # RFC 8019 puzzle solution


class NotifyType(IntEnum):
    """Notify message types (RFC 7296 §3.10.1 and the IANA registry).

    Values below 16384 are errors; 16384 and above are status types.
    """

    # --- error types ---
    UNSUPPORTED_CRITICAL_PAYLOAD = 1
    INVALID_IKE_SPI = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_SYNTAX = 7
    INVALID_MESSAGE_ID = 9
    INVALID_SPI = 11
    NO_PROPOSAL_CHOSEN = 14
    INVALID_KE_PAYLOAD = 17
    AUTHENTICATION_FAILED = 24
    SINGLE_PAIR_REQUIRED = 34
    NO_ADDITIONAL_SAS = 35
    INTERNAL_ADDRESS_FAILURE = 36
    FAILED_CP_REQUIRED = 37
    TS_UNACCEPTABLE = 38
    INVALID_SELECTORS = 39
    UNACCEPTABLE_ADDRESSES = 40  # RFC 4555
    UNEXPECTED_NAT_DETECTED = 41  # RFC 4555
    USE_ASSIGNED_HoA = 42  # RFC 5026
    TEMPORARY_FAILURE = 43  # RFC 7296
    CHILD_SA_NOT_FOUND = 44  # RFC 7296
    INVALID_GROUP_ID = 45  # G-IKEv2
    AUTHORIZATION_FAILED = 46  # G-IKEv2
    STATE_NOT_FOUND = 47  # RFC 9370
    TS_MAX_QUEUE = 48  # RFC 9611
    # --- status types ---
    INITIAL_CONTACT = 16384
    SET_WINDOW_SIZE = 16385
    ADDITIONAL_TS_POSSIBLE = 16386
    IPCOMP_SUPPORTED = 16387
    NAT_DETECTION_SOURCE_IP = 16388
    NAT_DETECTION_DESTINATION_IP = 16389
    COOKIE = 16390
    USE_TRANSPORT_MODE = 16391
    HTTP_CERT_LOOKUP_SUPPORTED = 16392
    REKEY_SA = 16393
    ESP_TFC_PADDING_NOT_SUPPORTED = 16394
    NON_FIRST_FRAGMENTS_ALSO = 16395
    MOBIKE_SUPPORTED = 16396  # RFC 4555
    ADDITIONAL_IP4_ADDRESS = 16397  # RFC 4555
    ADDITIONAL_IP6_ADDRESS = 16398  # RFC 4555
    NO_ADDITIONAL_ADDRESSES = 16399  # RFC 4555
    UPDATE_SA_ADDRESSES = 16400  # RFC 4555
    COOKIE2 = 16401  # RFC 4555
    NO_NATS_ALLOWED = 16402  # RFC 4555
    AUTH_LIFETIME = 16403  # RFC 4478
    MULTIPLE_AUTH_SUPPORTED = 16404  # RFC 4739
    ANOTHER_AUTH_FOLLOWS = 16405  # RFC 4739
    REDIRECT_SUPPORTED = 16406  # RFC 5685
    REDIRECT = 16407  # RFC 5685
    REDIRECTED_FROM = 16408  # RFC 5685
    TICKET_LT_OPAQUE = 16409  # RFC 5723
    TICKET_REQUEST = 16410  # RFC 5723
    TICKET_ACK = 16411  # RFC 5723
    TICKET_NACK = 16412  # RFC 5723
    TICKET_OPAQUE = 16413  # RFC 5723
    LINK_ID = 16414  # RFC 5739
    USE_WESP_MODE = 16415  # RFC 5840
    ROHC_SUPPORTED = 16416  # RFC 5857
    EAP_ONLY_AUTHENTICATION = 16417  # RFC 5998
    CHILDLESS_IKEV2_SUPPORTED = 16418  # RFC 6023
    QUICK_CRASH_DETECTION = 16419  # RFC 6290
    IKEV2_MESSAGE_ID_SYNC_SUPPORTED = 16420  # RFC 6311
    IPSEC_REPLAY_COUNTER_SYNC_SUPPORTED = 16421  # RFC 6311
    IKEV2_MESSAGE_ID_SYNC = 16422  # RFC 6311
    IPSEC_REPLAY_COUNTER_SYNC = 16423  # RFC 6311
    SECURE_PASSWORD_METHODS = 16424  # RFC 6467
    PSK_PERSIST = 16425  # RFC 6631
    PSK_CONFIRM = 16426  # RFC 6631
    ERX_SUPPORTED = 16427  # RFC 6867
    IFOM_CAPABILITY = 16428  # 3GPP TS 24.303
    SENDER_REQUEST_ID = 16429  # G-IKEv2
    IKEV2_FRAGMENTATION_SUPPORTED = 16430  # RFC 7383
    SIGNATURE_HASH_ALGORITHMS = 16431  # RFC 7427
    CLONE_IKE_SA_SUPPORTED = 16432  # RFC 7791
    CLONE_IKE_SA = 16433  # RFC 7791
    PUZZLE = 16434  # RFC 8019
    USE_PPK = 16435  # RFC 8784
    PPK_IDENTITY = 16436  # RFC 8784
    NO_PPK_AUTH = 16437  # RFC 8784
    INTERMEDIATE_EXCHANGE_SUPPORTED = 16438  # RFC 9242
    IP4_ALLOWED = 16439  # RFC 8983
    IP6_ALLOWED = 16440  # RFC 8983
    ADDITIONAL_KEY_EXCHANGE = 16441  # RFC 9370
    USE_AGGFRAG = 16442  # RFC 9347
    SUPPORTED_AUTH_METHODS = 16443  # RFC 9593
    SA_RESOURCE_INFO = 16444  # RFC 9611
    USE_PPK_INT = 16445  # RFC 9867 (PPK in IKE_INTERMEDIATE)
    PPK_IDENTITY_KEY = 16446  # RFC 9867

    @property
    def is_error(self) -> bool:
        """RFC 7296 §3.10.1: types below 16384 report errors."""
        return self.value < 16384


class IDType(IntEnum):
    """Identification types (RFC 7296 §3.5; 4595; 7619)."""

    ID_IPV4_ADDR = 1
    ID_FQDN = 2
    ID_RFC822_ADDR = 3
    ID_IPV6_ADDR = 5
    ID_DER_ASN1_DN = 9
    ID_DER_ASN1_GN = 10
    ID_KEY_ID = 11
    ID_FC_NAME = 12  # RFC 4595
    ID_NULL = 13  # RFC 7619


class AuthMethod(IntEnum):
    """Authentication methods (RFC 7296 §3.8; 4754; 6467; 7619; 7427)."""

    RSA_SIG = 1
    SHARED_KEY_MIC = 2  # PSK
    DSS_SIG = 3
    ECDSA_SHA256_P256 = 9  # RFC 4754
    ECDSA_SHA384_P384 = 10
    ECDSA_SHA512_P521 = 11
    GSPAM = 12  # RFC 6467
    NULL_AUTH = 13  # RFC 7619
    DIGITAL_SIGNATURE = 14  # RFC 7427


class ProtocolID(IntEnum):
    """Security protocol identifiers (RFC 7296 §3.3.1; 4595)."""

    NONE = 0  # in Notify payloads without SPI
    IKE = 1
    AH = 2
    ESP = 3
    FC_ESP_HEADER = 4  # RFC 4595
    FC_CT_AUTHENTICATION = 5  # RFC 4595


class TSType(IntEnum):
    """Traffic selector types (RFC 7296 §3.13.1; 4595; 9478)."""

    IPV4_ADDR_RANGE = 7
    IPV6_ADDR_RANGE = 8
    FC_ADDR_RANGE = 9  # RFC 4595
    SECLABEL = 10  # RFC 9478


class CFGType(IntEnum):
    """Configuration payload types (RFC 7296 §3.15)."""

    CFG_REQUEST = 1
    CFG_REPLY = 2
    CFG_SET = 3
    CFG_ACK = 4


class CPAttr(IntEnum):
    """Configuration attribute types (RFC 7296 §3.15.1; 4306; 5739; 7651; 8598; 9464)."""

    INTERNAL_IP4_ADDRESS = 1
    INTERNAL_IP4_NETMASK = 2
    INTERNAL_IP4_DNS = 3
    INTERNAL_IP4_NBNS = 4
    INTERNAL_IP4_DHCP = 6
    APPLICATION_VERSION = 7
    INTERNAL_IP6_ADDRESS = 8
    INTERNAL_IP6_DNS = 10
    INTERNAL_IP6_DHCP = 12
    INTERNAL_IP4_SUBNET = 13
    SUPPORTED_ATTRIBUTES = 14
    INTERNAL_IP6_SUBNET = 15
    MIP6_HOME_PREFIX = 16  # RFC 5026
    INTERNAL_IP6_LINK = 17  # RFC 5739
    INTERNAL_IP6_PREFIX = 18  # RFC 5739
    HOME_AGENT_ADDRESS = 19
    P_CSCF_IP4_ADDRESS = 20  # RFC 7651
    P_CSCF_IP6_ADDRESS = 21  # RFC 7651
    FTT_KAT = 22
    EXTERNAL_SOURCE_IP4_NAT_INFO = 23
    TIMEOUT_PERIOD_FOR_LIVENESS_CHECK = 24
    INTERNAL_DNS_DOMAIN = 25  # RFC 8598
    INTERNAL_DNSSEC_TA = 26  # RFC 8598
    ENCDNS_IP4 = 27  # RFC 9464
    ENCDNS_IP6 = 28  # RFC 9464
    ENCDNS_DIGEST_INFO = 29  # RFC 9464


class CertEncoding(IntEnum):
    """Certificate encodings (RFC 7296 §3.6; 4806; 7670)."""

    PKCS7_X509 = 1
    PGP = 2
    DNS_SIGNED_KEY = 3
    X509_SIGNATURE = 4
    KERBEROS_TOKEN = 6
    CRL = 7
    ARL = 8
    SPKI = 9
    X509_ATTRIBUTE = 10
    RAW_RSA_KEY = 11
    HASH_URL_X509_CERT = 12
    HASH_URL_X509_BUNDLE = 13
    OCSP_CONTENT = 14  # RFC 4806
    RAW_PUBLIC_KEY = 15  # RFC 7670


class HashAlgorithm(IntEnum):
    """IKEv2 hash algorithms for SIGNATURE_HASH_ALGORITHMS (RFC 7427 §4; RFC 8420)."""

    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4
    IDENTITY = 5  # RFC 8420 (EdDSA signs the message itself)


class TransformAttr(IntEnum):
    """Transform attribute types (RFC 7296 §3.3.5)."""

    KEY_LENGTH = 14


class TransformType(IntEnum):
    """Transform types (RFC 7296 §3.3.2; RFC 9370 ADDKE1..7)."""

    ENCR = 1
    PRF = 2
    INTEG = 3
    KE = 4  # "D-H" in RFC 7296
    ESN = 5
    ADDKE1 = 6
    ADDKE2 = 7
    ADDKE3 = 8
    ADDKE4 = 9
    ADDKE5 = 10
    ADDKE6 = 11
    ADDKE7 = 12


class Encr(IntEnum):
    """Transform type 1, encryption algorithm IDs (RFC 7296 §3.3.2 and the IANA registry)."""

    DES = 2
    TRIPLE_DES = 3
    NULL = 11
    AES_CBC = 12
    AES_CTR = 13
    AES_CCM_8 = 14
    AES_CCM_12 = 15
    AES_CCM_16 = 16
    AES_GCM_8 = 18
    AES_GCM_12 = 19
    AES_GCM_16 = 20
    NULL_AUTH_AES_GMAC = 21
    CAMELLIA_CBC = 23
    CHACHA20_POLY1305 = 28


class Prf(IntEnum):
    """Transform type 2, pseudorandom function IDs (RFC 7296 §3.3.2; RFC 4615 CMAC)."""

    HMAC_MD5 = 1
    HMAC_SHA1 = 2
    AES128_XCBC = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7
    AES128_CMAC = 8


class Integ(IntEnum):
    """Transform type 3, integrity algorithm IDs (RFC 7296 §3.3.2; RFC 4868 SHA-2)."""

    NONE = 0
    HMAC_MD5_96 = 1
    HMAC_SHA1_96 = 2
    AES_XCBC_96 = 5
    AES_CMAC_96 = 8
    HMAC_SHA2_256_128 = 12
    HMAC_SHA2_384_192 = 13
    HMAC_SHA2_512_256 = 14


class KE(IntEnum):
    """Transform type 4, key exchange method IDs (RFC 7296 §3.3.2; RFC 5114; RFC 8031;
    draft-ietf-ipsecme-ikev2-mlkem for ML-KEM)."""

    NONE = 0
    MODP768 = 1
    MODP1024 = 2
    MODP1536 = 5
    MODP2048 = 14
    MODP3072 = 15
    MODP4096 = 16
    MODP6144 = 17
    MODP8192 = 18
    ECP256 = 19
    ECP384 = 20
    ECP521 = 21
    MODP1024_S160 = 22
    MODP2048_S224 = 23
    MODP2048_S256 = 24
    CURVE25519 = 31
    CURVE448 = 32
    ML_KEM_512 = 35
    ML_KEM_768 = 36
    ML_KEM_1024 = 37


class ESN(IntEnum):
    """Transform type 5, extended sequence numbers (RFC 7296 §3.3.2)."""

    NO = 0
    YES = 1
