"""Start-up known-answer self-tests of every algorithm pluto can offer (fail closed).

Libreswan's pluto checks each of its algorithms against test vectors before it
accepts the first SA (``ike_alg_test``; FIPS 140-3 §7.10.2 asks the same of a
crypto module: a known-answer test per algorithm at power-up).  ``run()`` does
it for pypluto: one published vector per ENCR, PRF, INTEG and KE transform of
``crypto.registry`` (RFC 7296 §3.3.2 transform types 1-4), through the same
code paths the IKE and ESP planes use (``ciphers``, ``prf``, ``dh``).  It
returns the list of failures; the daemon must refuse to start when it is not
empty.  A transform in the registry without a vector here is itself a failure,
so a new algorithm cannot slip in untested.

Where an output is long (MODP and ML-KEM public values, shared secrets) the
vector holds the SHA-256 of the published value instead of the value; the
inputs are always the published ones.  Vector sources, per transform:

* ENCR: AES-CBC RFC 3602 case 1; AES-CTR RFC 3686 vector #1; AES-GCM the
  McGrew-Viega GCM test cases 3/4 in the RFC 4106 layout (8/12/16-byte ICV);
  AES-CCM and AES-GMAC and Camellia-CBC Wycheproof ``aes_ccm_test``,
  ``aes_gmac_test``, ``camellia_cbc_pkcs5_test``; ChaCha20-Poly1305 RFC 7634
  Appendix B; 3DES the FIPS 81 Appendix C CBC example (keying option 3 of
  SP 800-67: K1 = K2 = K3 makes TDEA single DES); NULL (RFC 2410) the identity.
* PRF/INTEG: HMAC RFC 2202 / RFC 4868 test case 1 (full / truncated output),
  HMAC-MD5 RFC 2202 case 2; AES-XCBC RFC 3566/4434; AES-CMAC RFC 4493/4494/4615.
* KE: ECP RFC 5903 §8; X25519 RFC 7748 §6.1; X448 Wycheproof ``x448_test``;
  MODP 22-24 RFC 5114 Appendix A; MODP 1-18 strongSwan's published test vectors
  (no RFC has any) plus the SHA-256 of the RFC 2409/3526 prime; ML-KEM
  Wycheproof ``mlkem_*_test`` (C2SP CCTV): key generation from the seed
  (FIPS 203 §7.1) and decapsulation of the vector's ciphertext (§7.3).
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pypluto.crypto import ciphers, dh, registry
from pypluto.crypto.prf import get_prf
from pypluto.crypto.registry import Encr, Integ, Prf, TransformType

H = bytes.fromhex

KE_KATS: dict[int, dict[str, str]] = {
    1: {
        "kind": "modp",
        "source": "strongSwan test_vectors modp.c (no RFC vectors exist)",
        "priv_i": "6091ffc6de28c1ccc7c65da611abfae86a1074b22243e3706cb6de2fe29d1142",
        "priv_r": "76e02fc3eabe6a0fced6c31e5945d167fad00200b4af12cd6fc6d7e381486278",
        "pub_i_sha256": "e00157db2292fa7a18376eacb84cddaee1f431c70bb8513d46d11577f9d8df08",
        "pub_r_sha256": "3d79d83c17390efb06e0c7cba97001aa751695357eaaa892af96ccb5a3ff681e",
        "shared_sha256": "a3c5be42019fed39e937bd54c5604774ddb4ba8d6d3ec7a4632148ef559e7857",
        "prime_sha256": "b52ba6a3026520a6c49d37e4587601801bee500123b3259b6bf03e7cecc3e63d",
    },
    2: {
        "kind": "modp",
        "source": "strongSwan test_vectors modp.c (no RFC vectors exist)",
        "priv_i": "e53c205da0d8e4bfb4174944320fc6e4ea66fe44e3c931ac5da1450aea47ebcf",
        "priv_r": "7f9af721eb7cd2a900a36e399ebc5c65eecce6629c8e1c5a7ff33293645fd3e3",
        "pub_i_sha256": "eddc65bb78659abde6e3803cf358ede4b6d3dbb16566a1dd8e2cc49164e478ed",
        "pub_r_sha256": "7dcc6f3cb4f5cf5112c67df3d4d1bea6bfe346d74538e9eda4245d52789ed3f4",
        "shared_sha256": "3f931be2b8bab51794ac83db93e3721994c52034d9adeb1aaeac44e1e7df2f60",
        "prime_sha256": "3f35a3f5f6c4376a744acad409bb22f8d897f949d2311d885adaa890981b67a0",
    },
    5: {
        "kind": "modp",
        "source": "strongSwan test_vectors modp.c (no RFC vectors exist)",
        "priv_i": "22d9dcc73079936a858c07aa85ed07b3d1e8b670e7caafa192837696070fef29",
        "priv_r": "323474de7788e0036b309549560b000d81f82fdb6978f3c03b701680de6e2810",
        "pub_i_sha256": "bf99ac6dcf33fe6747b9df54a051659b916d746b5eed8c1ebfc79b72a7b39244",
        "pub_r_sha256": "711508cb5889e1b5ad60e9206cb8076be5293d9ebb58ac68b2f3374944df26f0",
        "shared_sha256": "3aef946a97cdd02d8d648480b7c3632af819c201e6f83bc9302906d180a86628",
        "prime_sha256": "64fcc83ec403930bf18393dbc883ccaa1fbb08ac876f77f7aa99748ca945019b",
    },
    14: {
        "kind": "modp",
        "source": "strongSwan test_vectors modp.c (no RFC vectors exist)",
        "priv_i": (
            "af3bfd3862caa11774ce2b74840807c1de5cd6a7619bb3a0c7af39eedaa6eb89e2e9c144"
            "b3625b2731879cb58fa3766d"
        ),
        "priv_r": (
            "77a48e4772e23e284ce4af81399dcd589beb7cefbcc9d196f06dcfdfc3a88e3b4c1c82be"
            "fec0e64ba495ccde329936ce"
        ),
        "pub_i_sha256": "b243f24c7feb0a382d7a596481dff904f6f4cf469e3285dd5407f7aba421cb1d",
        "pub_r_sha256": "f6989c4cc9d1775045631633225479366b1e5ce747bf673f980d50bd536066b8",
        "shared_sha256": "dce39a9f51cb46a6b59996d62c2a4c59dc6ee79aa47958d830df0fc8d61e2352",
        "prime_sha256": "d66436f79bbd6b2e38c0ffbd079be904d2641415e2e67140e09448be9a60890e",
    },
    15: {
        "kind": "modp",
        "source": "strongSwan test_vectors modp.c (no RFC vectors exist)",
        "priv_i": (
            "51f8aab663201eb286bad29932b2e58a9296bf2aa77879cc8c6429d5a668adf76057adc3"
            "77cc75fd864796b8fa7b428c"
        ),
        "priv_r": (
            "af7f44290baac8815e70759b6b274227122250ea8d5a12ef4b0a82cfe91d52989d96c1a8"
            "40892a9ffa9f3a65c77c8cd9"
        ),
        "pub_i_sha256": "faded4e033f6abf8f5675a5e94af4d7eb2e2d773c4a08ef52961469cedc291fe",
        "pub_r_sha256": "3811328fa8ec2220595c3c305e713efa9d8cbbb9a4ed61ec0431110520d31102",
        "shared_sha256": "b06adc6cf9e09cff9f8f595eb4e358f21a7ab69443a43ef5e2a433b82b1c7994",
        "prime_sha256": "48cf8b092fbce4359d9871abf74f98e25b6163379eaa15cd9087e800c6d1c55c",
    },
    16: {
        "kind": "modp",
        "source": "strongSwan test_vectors modp.c (no RFC vectors exist)",
        "priv_i": (
            "ab69bce961f98aa9d591e3fd9abc46c80dde390284f19142e8815ab08054722bbd2e141e"
            "279ec7fd30aafaca664093731ecc75a2bd07e4a5883f560893c83350"
        ),
        "priv_r": (
            "ef3ecb88f4f988f72acd5aa22ebebf190fde7e8e4d0d50ccde80f941b3bbd6a2f9a12aee"
            "9bb3e5c5803f67affe27c80d05469b5254eb1f326c18731fd34ac2cd"
        ),
        "pub_i_sha256": "e89223af80ea1e95066ae13bccca96e4a0dc6b0fd527dcb9fbe14d43abdc8ca4",
        "pub_r_sha256": "a89a18ebb8099b7dbeba39e48d933939aef3ec1a1b82fe9e1403351e94d583f8",
        "shared_sha256": "0afc2b81c9c319fa8cb861fa9a77d7213e7fe29d5fb7bef0e9562a7e776bacfe",
        "prime_sha256": "4ee95187682bcb230ad26a95205f6920e84708f6251b3894329b09ec23919e33",
    },
    17: {
        "kind": "modp",
        "source": "strongSwan test_vectors modp.c (no RFC vectors exist)",
        "priv_i": (
            "ab36f0657c4fbadc2a3b07edd1c8afcb42afcd7ff91c57013725500d89429f34798f99f5"
            "de53d1088fd9f660a1a52be454f9634d15bb4e4ce09e5a69e0f99d59"
        ),
        "priv_r": (
            "59a552a40d1780af6433bc9e8a9b6d4830ddd3575307409a90c92bda404bb799f0093efe"
            "21bead85f16a237b0590c3356d968cc09dcd5b2d968607d6d1bf70c2"
        ),
        "pub_i_sha256": "2958c482576e8880ca14b83b7bdac76133bd6f2daf4f2f11b6f4547499bff5c7",
        "pub_r_sha256": "661991bc10a2b09cb0dfb171b5d080435c3ed3adf7513b5138859aae671f6b2a",
        "shared_sha256": "3e94710916cc166b5ff88c0aa5b790b653604465ab8e291122c5368bb0d63ab7",
        "prime_sha256": "d1bfe6d0925ce7e4da262b62861514a7755e35831e429f343e7b864848657efd",
    },
    18: {
        "kind": "modp",
        "source": "strongSwan test_vectors modp.c (no RFC vectors exist)",
        "priv_i": (
            "a648814745fe1ed1989b75ba6dd501e44e776dc997a0ae27376461b0ee796594c2e6db07"
            "e5f9d87d944d37012238e570af523a47f3e86e2a4cd0db3a4940cf0b"
        ),
        "priv_r": (
            "d8f2b09f17be6f13645cb457be0aa80202e843f510d293f93255982f8987266179d60190"
            "9570a3f9cc58508b62f88d64e0d059f1a2edead4428204cc092a2d82"
        ),
        "pub_i_sha256": "f28e28c5676e2ab0135c8b025942f485e3f0da6ac3382ef656b7f099c9041f18",
        "pub_r_sha256": "2ca32e3f66f9c8986d4d3de54915a3811d67991831131db169fdb4e0e12868f6",
        "shared_sha256": "ef628c529e5d2369c6b3fd09cdbba006e93838f2ba3f614a6092d0b38c5126b8",
        "prime_sha256": "39ab4feab950a3128fb71accb9fc3965d857012e081998a85996e3ea8b3c3bcf",
    },
    22: {
        "kind": "modp",
        "source": "RFC 5114 Appendix A",
        "priv_i": "b9a3b3ae8fefc1a2930496507086f8455d48943e",
        "priv_r": "9392c9f9eb6a7a6a9022f7d83e7223c6835bbdda",
        "pub_i_sha256": "33bc36bb57958663a8014d9830598b0de00c766f0aca7ec9d486bafe2e84b703",
        "pub_r_sha256": "8cb9ce9b3a092b9c436498b2a242751405e00a78da00a9f89eb1126aaf57276b",
        "shared_sha256": "efaf3f62d608cdbd9ccd679f8f3f010d0883e1fe436840b852be9e5571fe23f3",
        "prime_sha256": "44c55cfee5c075927cf682da5b681bdecbd5c3eb0784c14f5dce7610f0ef133d",
    },
    23: {
        "kind": "modp",
        "source": "RFC 5114 Appendix A",
        "priv_i": "22e62601dbffd06708a680f747f361f76d8f4f721a0548e483294b0c",
        "priv_r": "4ff3bc96c7fc6a6d71d3b363800a7cdfef6fc41b4417ea15353b7590",
        "pub_i_sha256": "149588a0f8b466223d7f41bc948c3a158e5cef1669579d7d985b52dc7778f11e",
        "pub_r_sha256": "2aab48359cedc46db91bac808f601f905aebec30795371f34f8fc8d34935b32b",
        "shared_sha256": "885bb5ebe4da0bd256299131a3f2ecfc683ba48652048c6bb21b7461f29cf49b",
        "prime_sha256": "bfe545862ca102ad1eeddb5fbfa5bf855ac4995c56a8b408ce3fe099dce93a9d",
    },
    24: {
        "kind": "modp",
        "source": "RFC 5114 Appendix A",
        "priv_i": "0881382cdb87660c6dc13e614938d5b9c8b2f248581cc5e31b35454397fce50e",
        "priv_r": "7d62a7e3ef36de617b13d1afb82c780d83a23bd4ee6705645121f371f546a53d",
        "pub_i_sha256": "ba101a638cd0382ded9814bbf575c26ac8bb2a7e0977ec68ac964ecc4b62a6c4",
        "pub_r_sha256": "f6c9bb57f3f682a66969bcf5471b2ba364c834dd833278e09536028d6c72553e",
        "shared_sha256": "01eb7b326b9093eea16968f04915ea1097194caee5bc657dba57bb69c6b7613d",
        "prime_sha256": "0b7835722cb619827610c2549fdda5587421686c4409a13865e76225522ddcc9",
    },
    19: {
        "kind": "ecp",
        "source": "RFC 5903 §8.1",
        "priv_i": "c88f01f510d9ac3f70a292daa2316de544e9aab8afe84049c62a9c57862d1433",
        "priv_r": "c6ef9c5d78ae012a011164acb397ce2088685d8f06bf9be0b283ab46476bee53",
        "pub_i": (
            "dad0b65394221cf9b051e1feca5787d098dfe637fc90b9ef945d0c37725811805271a046"
            "1cdb8252d61f1c456fa3e59ab1f45b33accf5f58389e0577b8990bb3"
        ),
        "pub_r": (
            "d12dfb5289c8d4f81208b70270398c342296970a0bccb74c736fc7554494bf6356fbf3ca"
            "366cc23e8157854c13c58d6aac23f046ada30f8353e74f33039872ab"
        ),
        "shared": "d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de",
    },
    20: {
        "kind": "ecp",
        "source": "RFC 5903 §8.2",
        "priv_i": (
            "099f3c7034d4a2c699884d73a375a67f7624ef7c6b3c0f160647b67414dce655e35b5380"
            "41e649ee3faef896783ab194"
        ),
        "priv_r": (
            "41cb0779b4bdb85d47846725fbec3c9430fab46cc8dc5060855cc9bda0aa2942e0308312"
            "916b8ed2960e4bd55a7448fc"
        ),
        "pub_i": (
            "667842d7d180ac2cde6f74f37551f55755c7645c20ef73e31634fe72b4c55ee6de3ac808"
            "acb4bdb4c88732aee95f41aa9482ed1fc0eeb9cafc4984625ccfc23f65032149e0e144ad"
            "a024181535a0f38eeb9fcff3c2c947dae69b4c634573a81c"
        ),
        "pub_r": (
            "e558dbef53eecde3d3fccfc1aea08a89a987475d12fd950d83cfa41732bc509d0d1ac43a"
            "0336def96fda41d0774a3571dcfbec7aacf3196472169e838430367f66eebe3c6e70c416"
            "dd5f0c68759dd1fff83fa40142209dff5eaad96db9e6386c"
        ),
        "shared": (
            "11187331c279962d93d604243fd592cb9d0a926f422e47187521287e7156c5c4d6031355"
            "69b9e9d09cf5d4a270f59746"
        ),
    },
    21: {
        "kind": "ecp",
        "source": "RFC 5903 §8.3",
        "priv_i": (
            "0037ade9319a89f4dabdb3ef411aaccca5123c61acab57b5393dce47608172a095aa85a3"
            "0fe1c2952c6771d937ba9777f5957b2639bab072462f68c27a57382d4a52"
        ),
        "priv_r": (
            "0145ba99a847af43793fdd0e872e7cdfa16be30fdc780f97bccc3f078380201e9c677d60"
            "0b343757a3bdbf2a3163e4c2f869cca7458aa4a4effc311f5cb151685eb9"
        ),
        "pub_i": (
            "0015417e84dbf28c0ad3c278713349dc7df153c897a1891bd98bab4357c9ecbee1e3bf42"
            "e00b8e380aeae57c2d107564941885942af5a7f4601723c4195d176ced3e017cae20b664"
            "1d2eeb695786d8c946146239d099e18e1d5a514c739d7cb4a10ad8a788015ac405d7799d"
            "c75e7b7d5b6cf2261a6a7f1507438bf01beb6ca3926f9582"
        ),
        "pub_r": (
            "00d0b3975ac4b799f5bea16d5e13e9af971d5e9b984c9f39728b5e5739735a219b97c356"
            "436adc6e95bb0352f6be64a6c2912d4ef2d0433ced2b6171640012d9460f015c68226383"
            "956e3bd066e797b623c27ce0eac2f551a10c2c724d9852077b87220b6536c5c408a1d2ae"
            "bb8e86d678ae49cb57091f4732296579ab44fcd17f0fc56a"
        ),
        "shared": (
            "01144c7d79ae6956bc8edb8e7c787c4521cb086fa64407f97894e5e6b2d79b04d1427e73"
            "ca4baa240a34786859810c06b3c715a3a8cc3151f2bee417996d19f3ddea"
        ),
    },
    31: {
        "kind": "ecx",
        "source": "RFC 7748 §6.1",
        "priv_i": "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        "pub_i": "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
        "priv_r": "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        "pub_r": "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
        "shared": "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
    },
    32: {
        "kind": "ecx",
        "source": "Wycheproof x448_test.json tcId 1",
        "priv_i": (
            "e41c63d5159c89de12163fde9d04cf1f430f346b8b2c1f2a4b1f5aee63d17aec29d4b1de"
            "bf8b6457e7809d2b15ff9779c97becb04b824efa"
        ),
        "pub_r": (
            "f8073fc01c8358362c08740c914b419847ef1e409f4e40d9440febc26f00551adb1c37c6"
            "c2a87d8283b8cb453e928a0d42793f72894e0f81"
        ),
        "shared": (
            "acd496ceb5f68bf9c267196b405f59701a40ec88744b7e5e60bf8f81e8b13df448efe402"
            "001750edb0b695a0512f08c572a2e356493d170b"
        ),
    },
    35: {
        "kind": "kem",
        "source": "Wycheproof mlkem_512_test.json tcId 1 (C2SP CCTV)",
        "seed": (
            "a3896e30892230a6c1dff667f8caee759ff84a08e3462ae484fcbca9971d7959cdc6c5ec"
            "65f10a5a24b5145aac863232ee3b2229ca3a6c4b9c8a2dafc315d9d4"
        ),
        "ek_sha256": "3399ef1223024bd0f646ce6f860fd99557b67058fa620850e772f8531af36231",
        "ct_b64": (
            "AOx/zbYXYp/q1/Q89Zp9OguUa1xfRyQHgSwVxEJJ5Sl0SD6zH7bOXhVyhwjvJPeLthu1yLbr"
            "tOipbluJjgacSZxEpX77CQcjRZfoEPTeQNhdbqzXdbg0AJN6yGPP5dQGRpuNPKT22+Cs7WD7"
            "7LMliPHdqqCLpcWxd6tRtUjYriIY6y2bArMctLtud1S2p0hWMWrT4DlAJfdQQSAjp0q4UfwD"
            "FxytqZPGRp+iVLXThO2rHv6PLvtuujfHunQ0uyQzMZOISRFK05jPkQOPuWwwpxL0fhxxg5Vo"
            "ONSHAW8CO9mQCpTGBu2qQr8OZ/Ku3QP1pYHlWvKeJK8GG6c9pkw4addZigyVw8gzDstEgcqy"
            "yFzKqjZvmfO6/JgDYvTXAaIz0JZ97Xjk8YdLQs2ndLiI0x8WcdZWfRY21bK8wRfiolbzQ1Qc"
            "Phc+kAttbHG81VR50j3ua1Ti/jIwPHlV+l9WeJRgXtdeZeVIWCIsDQZbqSMfzYKrhq9jwkLR"
            "DR0wtBduK7gWn71/A8+gRAmIUzgggyhO+M7PBfnQvT2a+E9t9VHj0R6SgXlNNqYZ9h5HkB6g"
            "3WlXgiQSUPC1wqINdtOv78sR0BUXnWqadBIcRI4xX1B8sprdQNpOsFyuJzIMSxiiXXrySsew"
            "vfc4IUPU0C2z59AW+f9WOODfeWj3hayAAMdUWhpw1v1DzDuijYLp62zLOR4JS6haSa1un4/Y"
            "+qmVQGKl3xPGmEe+5IW8ZiS0C4Eo/pESMbTvm0oiztT4FA32WluBgGZRKCc/3gKVWmWSHw0b"
            "4Tn74e3wrAHbHSpf/ZXWPTOwp2J8q0vNN2RyOMgBl9T6iKfjTUyqBm26Kub+//ah6ASnLUnt"
            "RDwpstsxP98l2Y0N7pkr78RXL4se7g23IntuIC72nqg0CuNpD8Bk0+39jQZ5NNswYXZ+SFfo"
            "BeiIKU76ckh0P8qh4BrNr0kd5AjFiGm8liTJURA8B5eTvh7fqUQt9N7OQOq7memwFBD8AQiy"
            "ahPNQkzZqd5br6H8"
        ),
        "shared": "cf3bcfeb2679cb43658fcdcd01aa1505bcea1e72a165ccac7bfb66d9dc0c0e90",
    },
    36: {
        "kind": "kem",
        "source": "Wycheproof mlkem_768_test.json tcId 1 (C2SP CCTV)",
        "seed": (
            "cbfc4405d1b2a3a386c94c25e0f2d5f5ee92cb0388ff4d6aa04223086d51c3fd24752da1"
            "4c9fc3b8ae0d9e4a8b1016b8d8fc69e229c03ea2ef08a4ae0cffc37f"
        ),
        "ek_sha256": "67fe2cb60768d55758c67bfd5842692dedb14513d581c48db2cd3adf94568106",
        "ct_b64": (
            "AOlsROtfU4DYC0ywXWCJcaKPvoOLkStVi/lnbGxnyWku1uoGP8R7cNXWAEglwmm5y45otXKN"
            "Z/RIRNl2hqERVOPL1Kb55HUk2T2FG9zkgNd2Le0JvlPRfM4+4o3FoGkRwGK5myGDVd1YIhCM"
            "VeLGf36gt0thibM7RYnY/50Mhn0T7arxxfckZ1Mgvto+asxnPASPoEobMPiZIn1aVV4IpBKk"
            "e323XrEYqIRKcbGGiAQm9rtudxhtGOdTy8zpPJ+3bHKYdbTUc+7KjauZQZafrvBN+c4xeOc0"
            "HqtBbSi7eu4Sv7j0w9+BTv9FoBhzKQeaz8Qajo26ewjREfAuN6HStp5X7vgI/MauIzhVNKQg"
            "qT37apXHPi8QFhd8T+nTztdp4ncpOqzt7W0H78eJDqqIW9HnP55dornP2g1Ey8kJBwWsLOPn"
            "vNd3W1k8cG5F3cl9OmXZt+c2c/lHPfW/7GiWcfc+f27nfHMKjr2h8LLBEqcZBNbyilHY1Hn4"
            "Mj+0heci9cTVhX6VmJqcuvJz79BPw8vemLqplp4JXoiszs+9Eu8hVUl6WxX+kacNEQa5GlaD"
            "Y7/C1nNsyBOMvEHd8eVP1AUR4n2J4sJsAntjwVbiu7mY+q7T1yGG8Mxiba05p4Lc2iCH/ROp"
            "SY4QtBtoVkaiJ+oRZqVjLBlZg/SrorcYtAdAMNVxJtNMODSYkgB6y+qeOTuWfcMUaycPCAof"
            "C+6Q1loJWmNSp3GO0XF6gCWivTjGbRILr0JHZ2of4ESlfOJowHj4/0bMJv5PnHoD1kZ62suE"
            "GNJic2Yrzh97wAuQbgCI6V3A+0GeIjLoWqx3uefNVj5gTeXh0+lpPc07GYZc9CUHc2kefgr5"
            "wnVc0x9J0flnCPO6LwuYGEUlq7hp4S1c6grBdAGBqHUDUwCwWlS41C7jtK6SsG5DzYB+Kwls"
            "l38jxh74yYnFLtg3VAdt6hMj9jklC+9hvfkDv3lhzsibppQtnQZHrJyBldk+2KvO3yV1RkQD"
            "VxmloKHIwHmJEnJqmoJY5MEK50hTIu2bozH28JDEtJKk/PU9dTzTTyjsBEP84HJPQ8iaOUIW"
            "nVCZqPdDDzhpHrzi4/5PYA2Cx8zt9gZz+OXUwan4S4tbI/XtY977anIF4KixBb3G/0Vo/HjL"
            "RFawL+239MSPb9a2khajMZghA520DhmjGgsMnUcdWnpzhl0m+L41lVJbHsSoV579B+qY4mAu"
            "K//f2P68XHtMc20ya1AwzMb6+UIKnBVqj0UWuf/2dUWd/c1O+F1629/9YPSjlijjmcx1LC6Z"
            "qy9DHcdl58nSBr/jJkn77070ix15Nvx0dm1yQ1DuIkWo1fI/vGx+2LVxaM4ehk5J1/jEddza"
            "FAvUJHOCWzxy64xUeAGIgTAR4ZYqUD+bUW4TIm3mN1sgRzOwGSGDyPVehw5hz4lHwxkXkLwL"
            "ZXvEOuvJ2Gw="
        ),
        "shared": "76c10bb1d86d96d7eb18e298363e51f7728e113f455df7d15017940ed3541451",
    },
    37: {
        "kind": "kem",
        "source": "Wycheproof mlkem_1024_test.json tcId 1 (C2SP CCTV)",
        "seed": (
            "8247c17686a8bc0b3afebe6bed1df1dc3ff7fa07c3670f624930235f20aecb4353ece11f"
            "aa61f47d946ee501abb9a48029096de63b243a1794c4a760f98cc157"
        ),
        "ek_sha256": "5db6d38ecb5e92dda86dd468931bd4272def51b901c05979ce40053acc85a1e8",
        "ct_b64": (
            "AB2AN29ApVXJWQg45N2VPPuaMO33do8PNbKYxp60WaQuCB95tBk5GxQ0clSEnx3erG0Dl18i"
            "yb0OeifO8YQy4dQrddOEUTDOyM0jhwBxFveyH2nRluszQKRNSz2Ssqz6QgzkZUBj0Oc5/7kj"
            "iZDBF0VO0BfTO9Y7wcLamtxSyw+i3JD290guMHL01iDWWvq46QiUPdek6R7U4SuRR2Vqj+dY"
            "q9+i1dLYEO20QJqwkzK53dzNxsq/jYljPGCaCgBa8vT6xrr3AxUQOCVTH1E/n8n20IjPKLVP"
            "9vukcl5u4pETG3eAWKRe1JvqEMGqCu0FeWo7yIoaRbxjoBs2RlIeeWi9sOq3J1im8CVBGBQB"
            "PhI/41RIT0OAohj28LaHa/SiJXZokKsZG2/9+E/BlSFTO1jMUYpfQNfihh6aUcKX46v+izZn"
            "SgZr27UjkLbiyR0KbhrmYhDz5wA0TRp1l4lFrJ73/nKnwfaTlpDNM+Ee86nvu53DKFJUrwcS"
            "F1iq2H00qFIxtj8jprgaLlvSMsATj/V0QX0rH8veRbaG7WNI2nuyzvFRKF7lL04OIUE5+BKm"
            "jfaUWXBrr4XjGgBzYjx/rsHAuZ2G00/TpxRSEMGHDzdof41MlISaIt0Qmc2Mcwlp/PjhzEwa"
            "9iP4m7Dy47bkpMN7bU18j2bfjDhMZiZOeks16JPPdCRkLbIKhErvdKEvHdJEvTMRAUhrq+5U"
            "syZED5+bl+HxpgMUa0K4JmoFeB7Iv/9XurGGlzqbe/+mD/JGoB0sklmVDpTp3yXcowxZiQKA"
            "Y23uQ/g1EN333ipfd6eIVM3nDq0JQ7rHiV7hDTY6kzSh1QLCgmcRYaI1Xx1L6Zofn2fmh7mF"
            "HK+KPbEHlAsatEgQhPipYFPGIFogfKGQQ/jSAJDvJFVXxrfBvSBl0tt/g0Os3Nn3NBSRxmWo"
            "hCwZ4Z0SqzawHsaMlb/ZImqhA3DqG3HwizJveBepbFMTLXtQBPoA7PHWIEGY/HhbBUOLxofL"
            "ojXlwiEdjh4fIRZk8kDDwuT0oZkJQ+yDrYAUG+zrpuMThMCqFIeDhyWTwM6eACyyr23jWEXc"
            "H81ufV2pa26M86TKsdZJCtGCA82sGnf2CMhGDSEjCshHD4QcbBf1ofr/hxwnxang6TogtcHh"
            "fY96XHQGWrGSwz0I0MYDImoBufWXbg8GYluqf5BVTugF1+4kLLVNMYN1i/lI6jECT6OqNoz8"
            "i6ffFHSkOI6E4/eWFwgKls46+Izl4bm6AoccLmpU0PwFBQKV9fmmOKY8UUKLyTXH9TnN2QpV"
            "AbiDKjvqSQZX8CbsZ0XUsw9Rjm9LK+4K+2WzTfHYGkdRrtCGW5ywH0zcZcqz7hs+mIsjwPLG"
            "PLFuMF1Me2mi66yEcdbWFBIAS7vUVQ3rv2TEn1l13x9L71MoH7rdpKX7ffpj5yYUmadMfzry"
            "AmqZfB/c3mwH+zznIKRQ+d5pcNYSFwYkXkzSMyJHxszoQIWvv3+rT38fqYYmZGYw5I4tq4yy"
            "FmHDBqIuvXJDvrf8PGz1cIikDQXCOB/vZVxCgX8buV3n0g840C/B47LWhSsqjzpN1KJiraWf"
            "SEguREaMEMBQY2jDBe5O/JPWCtrCbBMlhzlkCJB2IHfncey1fAHvu4lcZanrGixHnxrXQ0N3"
            "Mxc4ogNIQGgt465nPOR+PlQXJVajpUMGb9XjBHPDNkH/6QFEu+FdaLXoq5wGP0jts6RIA1bn"
            "p93vMsYPDt/88cX+9OtIhHZ5T0Kve2brAbGb+6WcrNFX1IUDeyw4Ot0M8v9yfBBWpGaTDkbj"
            "8IGvQppF5czf6ODzwhBHTrAVZ0TH1UhvdhkQCDtqj7oYmKUrESuWtLM4fy8+QACqCFR4GwKe"
            "jAHz8J8M02HqqlaomyoFShgFJI6J3cMtyKPlMzNZVobk57B2NAB2opwcD08SMq81Un6NNfiH"
            "5/5SSZG1t02jsC3Cb3InWVwJb9QFQbhufwcFzr1MKhNMFOj57vlPpgmjBeakKfKQQE8QQ8Fm"
            "Y4ffS6/CMI3E6yU5wB3twj2cIBipxc3sUEdaj47jLZ0T15swTc9puUm+eHf6tHUrRbnuBGIh"
            "I9s="
        ),
        "shared": "c6338bf92f3930b95f81d87fe669fabc42aaa549e8fecfbfdbe237d739fe4d96",
    },
}


# ENCR: one vector per transform.  AEAD: key‖salt, iv (8), aad, plain, ct‖icv.
# "nonce" instead of salt/iv: the vector's nonce is not the RFC 4309 11-byte one,
# so it goes through the same AEAD object's full-nonce path (``Aead.raw``).
ENCR_KATS: dict[int, dict[str, str]] = {
    Encr.NULL: {"source": "RFC 2410 (identity)", "key": "", "iv": "", "plain": "00ff10",
                "cipher": "00ff10"},
    Encr.TRIPLE_DES: {
        "source": "FIPS 81 Appendix C CBC example, K1=K2=K3 (SP 800-67 option 3)",
        "key": "0123456789abcdef" * 3, "iv": "1234567890abcdef",
        "plain": "4e6f77206973207468652074696d6520666f7220616c6c20",
        "cipher": "e5c7cdde872bf27c43e934008c389c0f683788499a7c05f6"},
    Encr.AES_CBC: {
        "source": "RFC 3602 §4 case 1", "key": "06a9214036b8a15b512e03d534120006",
        "iv": "3dafba429d9eb430b422da802c9fac41", "plain": "53696e676c6520626c6f636b206d7367",
        "cipher": "e353779c1079aeb82708942dbe77181a"},
    Encr.AES_CTR: {
        "source": "RFC 3686 §6 test vector #1", "key": "ae6852f8121067cc4bf7a5765577f39e00000030",
        "iv": "0000000000000000", "plain": "53696e676c6520626c6f636b206d7367",
        "cipher": "e4095d4fb7a7b3792d6175a3261311b8"},
    Encr.CAMELLIA_CBC: {
        "source": "Wycheproof camellia_cbc_pkcs5_test tcId 2 (first block: no padding)",
        "key": "e09eaa5a3f5e56d279d5e7a03373f6ea", "iv": "c9ee3cd746bf208c65ca9e72a266d54f",
        "plain": "ef4eab37181f98423e53e947e7050fd0", "cipher": "e4758e976f51c0fe9ae7abef11192a78"},
    Encr.AES_GCM_8: {
        "source": "GCM spec test case 3, RFC 4106 layout, 8-byte ICV",
        "key": "feffe9928665731c6d6a8f9467308308cafebabe", "iv": "facedbaddecaf888", "aad": "",
        "plain": "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                 "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        "cipher": "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
                  "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
                  "4d5c2af327cd64a6"},
    Encr.AES_GCM_12: {
        "source": "GCM spec test case 3, RFC 4106 layout, 12-byte ICV",
        "key": "feffe9928665731c6d6a8f9467308308cafebabe", "iv": "facedbaddecaf888", "aad": "",
        "plain": "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                 "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        "cipher": "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
                  "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
                  "4d5c2af327cd64a62cf35abd"},
    Encr.AES_GCM_16: {
        "source": "GCM spec test case 4, RFC 4106 layout",
        "key": "feffe9928665731c6d6a8f9467308308cafebabe", "iv": "facedbaddecaf888",
        "aad": "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        "plain": "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                 "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        "cipher": "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
                  "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
                  "5bc94fbc3221a5db94fae95ae7121a47"},
    Encr.AES_CCM_8: {
        "source": "Wycheproof aes_ccm_test tcId 362 (96-bit nonce, 64-bit tag)",
        "key": "ea5a915fd7be0aaf14b88f5dc4fd719a000000", "nonce": "aeecf19f7d3379ee55ba6468",
        "aad": "13791aad5812a362291a4f6d63687d33", "plain": "d313e09cd48b06f16ef9178e42624bd0",
        "cipher": "f9bc9a66186b6a60035d144dfb34c4af2fb637ff91d6fd9e"},
    Encr.AES_CCM_12: {
        "source": "Wycheproof aes_ccm_test tcId 378 (96-bit nonce, 96-bit tag)",
        "key": "6b7489d158f377e6692d84a97727ff41000000", "nonce": "9ac091ef05d0ce7428827ed3",
        "aad": "38469f1049a7ea3da0551cfb34010bf6", "plain": "352dbd5bb8abf0a097b929160b8f8cec",
        "cipher": "00d3948bac8572ed1ed59c2655b769f7323ba1c806f3eac673015a88"},
    Encr.AES_CCM_16: {
        "source": "Wycheproof aes_ccm_test tcId 262 (88-bit nonce = RFC 4309 salt‖IV)",
        "key": "82841ef7fbae35546525fbbebf4718fbb5cd81", "iv": "8f73a36ed025b6cf",
        "aad": "44f48c2a20456358", "plain": "8c2c823bb39941b1c6b75bbc82f05ba4",
        "cipher": "b287c637a7554362c80d6b24d50ddfb33967277da0f856f8f0ad49282894d2bb"},
    Encr.NULL_AUTH_AES_GMAC: {
        "source": "Wycheproof aes_gmac_test tcId 2 (RFC 4543: payload in clear, then tag)",
        "key": "f0cfce280656fabd93f68ba6b3a3ad6e0a38ca62", "iv": "6b430ed84a2a8dfe", "aad": "",
        "plain": "4b", "cipher": "4b8677a0160a923ce7437ca94b8de97da5"},
    Encr.CHACHA20_POLY1305: {
        "source": "RFC 7634 Appendix B (IKEv2 SK payload)",
        "key": "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9fa0a1a2a3",
        "iv": "1011121314151617",
        "aad": "c0c1c2c3c4c5c6c7d0d1d2d3d4d5d6d72e202500000000090000004529000029",
        "plain": "0000000c000040010000000a00",
        "cipher": "610394701f8d017f7c129248896b71bfe25236efd7cdc67066906315b2"},
}

_HI = {"key": "0b" * 20, "data": "4869205468657265"}  # RFC 2202/4868 test case 1
_XCBC = {"key": "000102030405060708090a0b0c0d0e0f",
         "data": "000102030405060708090a0b0c0d0e0f10111213"}
_JEFE = {"key": "4a656665", "data": "7768617420646f2079612077616e7420666f72206e6f7468696e673f"}

PRF_KATS: dict[int, dict[str, str]] = {
    Prf.HMAC_MD5: {"source": "RFC 2202 §2 test case 2", **_JEFE,
                   "out": "750c783e6ab0b503eaa86e310a5db738"},
    Prf.HMAC_SHA1: {"source": "RFC 2202 §3 test case 1", **_HI,
                    "out": "b617318655057264e28bc0b6fb378c8ef146be00"},
    Prf.HMAC_SHA2_256: {"source": "RFC 4868 §2.7.1 test case 1", **_HI,
                        "out": "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
    Prf.HMAC_SHA2_384: {"source": "RFC 4868 §2.7.1 test case 1", **_HI,
                        "out": "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59c"
                               "faea9ea9076ede7f4af152e8b2fa9cb6"},
    Prf.HMAC_SHA2_512: {"source": "RFC 4868 §2.7.1 test case 1", **_HI,
                        "out": "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
                               "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854"},
    Prf.AES128_XCBC: {"source": "RFC 4434 §6 (18-byte key)",
                      "key": "000102030405060708090a0b0c0d0e0fedcb", "data": _XCBC["data"],
                      "out": "8cd3c93ae598a9803006ffb67c40e9e4"},
    Prf.AES128_CMAC: {"source": "RFC 4615 §4 (10-byte key)", "key": "00010203040506070809",
                      "data": _XCBC["data"], "out": "290d9e112edb09ee141fcf64c0b72f3d"},
}

INTEG_KATS: dict[int, dict[str, str]] = {
    Integ.HMAC_MD5_96: {"source": "RFC 2202 §2 test case 2 (key zero-padded to 16 bytes: "
                                  "HMAC pads keys to the block size)",
                        "key": _JEFE["key"] + "00" * 12, "data": _JEFE["data"],
                        "icv": "750c783e6ab0b503eaa86e31"},
    Integ.HMAC_SHA1_96: {"source": "RFC 2202 §3 test case 1, truncated (RFC 2404)", **_HI,
                         "icv": "b617318655057264e28bc0b6"},
    Integ.HMAC_SHA2_256_128: {"source": "RFC 4868 §2.7.2.1 test case AUTH256-1",
                              "key": "0b" * 32, "data": _HI["data"],
                              "icv": "198a607eb44bfbc69903a0f1cf2bbdc5"},
    Integ.HMAC_SHA2_384_192: {"source": "RFC 4868 §2.7.2.2 test case AUTH384-1",
                              "key": "0b" * 48, "data": _HI["data"],
                              "icv": "b6a8d5636f5c6a7224f9977dcf7ee6c7fb6d0c48cbdee973"},
    Integ.HMAC_SHA2_512_256: {"source": "RFC 4868 §2.7.2.3 test case AUTH512-1",
                              "key": "0b" * 64, "data": _HI["data"],
                              "icv": "637edc6e01dce7e6742a99451aae82df"
                                     "23da3e92439e590e43e761b33e910fb8"},
    Integ.AES_XCBC_96: {"source": "RFC 3566 §4.6 test case 4", "key": _XCBC["key"],
                        "data": _XCBC["data"], "icv": "47f51b4564966215b8985c63"},
    Integ.AES_CMAC_96: {"source": "RFC 4494 §4 example 2 (RFC 4493 example 2 truncated)",
                        "key": "2b7e151628aed2a6abf7158809cf4f3c",
                        "data": "6bc1bee22e409f96e93d7e117393172a",
                        "icv": "070a16b46b4d4144f79bdd9d"},
}


@dataclass(frozen=True)
class Failure:
    """One algorithm that did not reproduce its known answer."""

    transform: str  # e.g. "ENCR AES_GCM_16"
    reason: str

    def __str__(self) -> str:
        return f"{self.transform}: {self.reason}"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _check_encr(tid: int, v: dict[str, str]) -> str | None:
    alg = registry.get(TransformType.ENCR, tid)
    assert alg is not None
    plain, want = H(v["plain"]), H(v["cipher"])
    if alg.aead:
        aead = ciphers.make_aead(tid, H(v["key"]))
        aad = H(v.get("aad", ""))
        if "nonce" in v:
            seal, open_ = aead.raw
            got = seal(H(v["nonce"]), plain, aad)
            back = open_(H(v["nonce"]), got, aad) if got == want else None
        else:
            got = aead.seal(H(v["iv"]), plain, aad)
            back = aead.open(H(v["iv"]), got, aad) if got == want else None
        if got != want:
            return "encryption differs from the known answer"
        if back != plain:
            return "decryption differs from the known answer"
        tampered = bytes([want[0] ^ 1]) + want[1:]
        try:
            if "nonce" in v:
                aead.raw[1](H(v["nonce"]), tampered, aad)
            else:
                aead.open(H(v["iv"]), tampered, aad)
        except Exception:  # noqa: BLE001 - IntegrityError or InvalidTag: the wanted outcome
            return None
        return "a modified ciphertext passed the integrity check"
    c = ciphers.make_cipher(tid, H(v["key"]))
    if c.encrypt(H(v["iv"]), plain) != want:
        return "encryption differs from the known answer"
    if c.decrypt(H(v["iv"]), want) != plain:
        return "decryption differs from the known answer"
    return None


def _check_prf(tid: int, v: dict[str, str]) -> str | None:
    if get_prf(tid).compute(H(v["key"]), H(v["data"])) != H(v["out"]):
        return "output differs from the known answer"
    return None


def _check_integ(tid: int, v: dict[str, str]) -> str | None:
    integ = ciphers.make_integ(tid, H(v["key"]))
    if integ.mac(H(v["data"])) != H(v["icv"]):
        return "ICV differs from the known answer"
    if not integ.verify(H(v["data"]), H(v["icv"])):
        return "the known ICV does not verify"
    return None


def _check_ke(tid: int, v: dict[str, str]) -> str | None:
    kind = v["kind"]
    if kind == "modp":
        grp = dh.modp_group(tid)
        if _sha(grp.p.to_bytes(grp.size, "big")) != v["prime_sha256"]:
            return "group prime differs from the RFC's"
        a = dh.ModpKE(tid, private=int(v["priv_i"], 16))
        b = dh.ModpKE(tid, private=int(v["priv_r"], 16))
        if _sha(a.public) != v["pub_i_sha256"] or _sha(b.public) != v["pub_r_sha256"]:
            return "public value differs from the known answer"
        if _sha(a.finish(b.public)) != v["shared_sha256"]:
            return "shared secret differs from the known answer"
        return None
    if kind == "ecp":
        a2 = dh.EcpKE(tid, private=int(v["priv_i"], 16))
        b2 = dh.EcpKE(tid, private=int(v["priv_r"], 16))
        if a2.public != H(v["pub_i"]) or b2.public != H(v["pub_r"]):
            return "public value differs from the known answer"
        if a2.finish(b2.public) != H(v["shared"]) or b2.finish(a2.public) != H(v["shared"]):
            return "shared secret differs from the known answer"
        return None
    if kind == "ecx":
        a3 = dh.EcxKE(tid, private=H(v["priv_i"]))
        if "pub_i" in v and a3.public != H(v["pub_i"]):
            return "public value differs from the known answer"
        if a3.finish(H(v["pub_r"])) != H(v["shared"]):
            return "shared secret differs from the known answer"
        return None
    if kind == "kem":
        k = dh.KemInitiator(tid, seed=H(v["seed"]))
        if _sha(k.public) != v["ek_sha256"]:
            return "encapsulation key differs from the known answer (FIPS 203 KeyGen)"
        if k.finish(base64.b64decode(v["ct_b64"])) != H(v["shared"]):
            return "decapsulated key differs from the known answer (FIPS 203 Decaps)"
        return None
    return f"unknown KE kind {kind!r}"


_CHECKS: dict[TransformType, tuple[str, Callable[[int, dict[str, str]], str | None]]] = {
    TransformType.ENCR: ("ENCR", _check_encr),
    TransformType.PRF: ("PRF", _check_prf),
    TransformType.INTEG: ("INTEG", _check_integ),
    TransformType.KE: ("KE", _check_ke),
}


def default_kats() -> dict[TransformType, dict[int, dict[str, str]]]:
    """The vectors above, by transform type and transform ID."""
    return {TransformType.ENCR: ENCR_KATS, TransformType.PRF: PRF_KATS,
            TransformType.INTEG: INTEG_KATS, TransformType.KE: KE_KATS}


def offered() -> list[registry.Algorithm]:
    """Every ENCR/PRF/INTEG/KE transform pluto can negotiate with this ``cryptography``.

    INTEG NONE and KE NONE carry no algorithm; a KE group that the installed
    ``cryptography`` cannot do (``dh.supported``) is never offered or accepted.
    """
    out = []
    for ttype in _CHECKS:
        for alg in registry.algorithms(ttype):
            if alg.id == 0 and ttype in (TransformType.INTEG, TransformType.KE):
                continue
            if ttype == TransformType.KE and not dh.supported(alg.id):
                continue
            out.append(alg)
    return out


def run(kats: dict[TransformType, dict[int, dict[str, str]]] | None = None,
        algorithms: Iterable[registry.Algorithm] | None = None) -> list[Failure]:
    """Check every offered algorithm against its vector; return the failures (none: pass).

    An exception inside an algorithm is a failure too (fail closed), as is an
    offered algorithm without a vector.
    """
    kats = default_kats() if kats is None else kats
    failures: list[Failure] = []
    for alg in (offered() if algorithms is None else algorithms):
        label, check = _CHECKS[alg.type]
        name = f"{label} {alg.iana_name}"
        vector = kats.get(alg.type, {}).get(int(alg.id))
        if vector is None:
            failures.append(Failure(name, "no known-answer vector"))
            continue
        try:
            reason = check(int(alg.id), vector)
        except Exception as e:  # noqa: BLE001 - any error is a failed self-test
            reason = f"{type(e).__name__}: {e}"
        if reason:
            failures.append(Failure(name, f"{reason} ({vector.get('source', '?')})"))
    return failures


@dataclass(frozen=True)
class Report:
    """What ``run_timed`` found: the failures, how many were checked and how long it took."""

    failures: list[Failure]
    checked: int
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.failures

    def log_lines(self) -> list[str]:
        """Lines for pluto's log (one per failure, or the one summary line)."""
        if self.ok:
            return [f"FIPS-style power-up self-tests passed: {self.checked} algorithms "
                    f"in {self.seconds * 1000:.0f} ms"]
        return [f"FATAL: algorithm self-test failed: {f}" for f in self.failures]


def run_timed(**kw: Any) -> Report:
    """``run`` with a count and the elapsed wall time (for the start-up log line)."""
    algs = kw.pop("algorithms", None)
    algs = offered() if algs is None else list(algs)
    t0 = time.perf_counter()
    failures = run(algorithms=algs, **kw)
    return Report(failures, len(algs), time.perf_counter() - t0)


__all__ = ["Failure", "Report", "default_kats", "offered", "run", "run_timed",
           "ENCR_KATS", "INTEG_KATS", "KE_KATS", "PRF_KATS"]
