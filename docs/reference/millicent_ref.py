#!/usr/bin/env python3
"""An independent Python implementation of the Millicent protocol.

Written from docs/PROTOCOL.md alone, with Python's hmac/hashlib and
pycryptodome's DES and ChaCha20-Poly1305, to show that the document is
enough to interoperate. Run it to check the vector files of both suites:

    python3 docs/reference/millicent_ref.py [VECTOR_FILE ...]

It exits non-zero and names the first vector that disagrees.
"""

import hashlib
import hmac
import json
import struct
import sys
from pathlib import Path

from Crypto.Cipher import DES, ChaCha20_Poly1305

# The suite of the vector file being checked: 1 (classic) or 2 (modern).
SUITE = 1


def mac(key: bytes, *parts: bytes) -> bytes:
    """The suite's keyed hash (HMAC-MD5 or HMAC-SHA-256) of the parts."""
    digest = hashlib.md5 if SUITE == 1 else hashlib.sha256
    return hmac.new(key, b"".join(parts), digest).digest()


def encode_body(suite, vendor, value, scrip_id, cust_id, expires_at, properties):
    name = vendor.encode("ascii")
    return (
        bytes([suite, len(name)])
        + name
        + struct.pack(">QQQQ", value, scrip_id, cust_id, expires_at)
        + struct.pack(">H", len(properties))
        + properties
    )


def decode_body(data: bytes):
    suite, name_len = data[0], data[1]
    vendor = data[2 : 2 + name_len].decode("ascii")
    offset = 2 + name_len
    value, scrip_id, cust_id, expires_at = struct.unpack_from(">QQQQ", data, offset)
    offset += 32
    (props_len,) = struct.unpack_from(">H", data, offset)
    properties = data[offset + 2 : offset + 2 + props_len]
    if offset + 2 + props_len != len(data):
        raise ValueError("trailing bytes")
    return dict(suite=suite, vendor=vendor, value=value, id=scrip_id, cust_id=cust_id,
                expires_at=expires_at, properties=properties)


def certificate(master_scrip_secret, body):
    return mac(master_scrip_secret, b"MC1-CERT", body)


def customer_secret(master_customer_secret, cust_id):
    return mac(master_customer_secret, b"MC1-CUST", struct.pack(">Q", cust_id))


def request_stamp(secret, body, cert, request):
    return mac(secret, b"MC1-REQS", body, cert, request)


def reply_stamp(secret, req_stamp, change_body, change_cert, goods):
    if change_body is None:
        return mac(secret, b"MC1-REPS", req_stamp, b"\x00", goods)
    return mac(secret, b"MC1-REPS", req_stamp, b"\x01", change_body, change_cert, goods)


def seal(key, purpose, nonce, plaintext):
    if SUITE == 2:
        cipher = ChaCha20_Poly1305.new(key=mac(key, b"MC2-SEAL"), nonce=nonce)
        cipher.update(bytes([purpose]))
        ciphertext, tag = cipher.encrypt_and_digest(plaintext)
        return nonce + ciphertext + tag
    enc_key = mac(key, b"MC1-SEAL-ENC")[:8]
    mac_key = mac(key, b"MC1-SEAL-MAC")
    pad = 8 - len(plaintext) % 8
    ciphertext = DES.new(enc_key, DES.MODE_CBC, iv=nonce).encrypt(plaintext + bytes([pad]) * pad)
    tag = mac(mac_key, bytes([purpose]), nonce, ciphertext)
    return nonce + ciphertext + tag


def open_sealed(key, purpose, sealed):
    if SUITE == 2:
        nonce, ciphertext, tag = sealed[:12], sealed[12:-16], sealed[-16:]
        cipher = ChaCha20_Poly1305.new(key=mac(key, b"MC2-SEAL"), nonce=nonce)
        cipher.update(bytes([purpose]))
        return cipher.decrypt_and_verify(ciphertext, tag)
    nonce, ciphertext, tag = sealed[:8], sealed[8:-16], sealed[-16:]
    mac_key = mac(key, b"MC1-SEAL-MAC")
    if not hmac.compare_digest(mac(mac_key, bytes([purpose]), nonce, ciphertext), tag):
        raise ValueError("bad seal")
    enc_key = mac(key, b"MC1-SEAL-ENC")[:8]
    padded = DES.new(enc_key, DES.MODE_CBC, iv=nonce).decrypt(ciphertext)
    return padded[: -padded[-1]]


def account_key(master_account_secret, account_id):
    return mac(master_account_secret, b"MC1-AKEY", struct.pack(">Q", account_id))


def account_mac(key, method, account_id, timestamp_ms, nonce, params):
    name = method.encode("ascii")
    return mac(key, b"MC1-ACCT", bytes([len(name)]), name,
               struct.pack(">QQ", account_id, timestamp_ms), nonce, params)


def exchange_request(vendor, value):
    name = vendor.encode("ascii")
    return bytes([len(name)]) + name + struct.pack(">Q", value)


def exchange_goods(vendor_scrip, sealed_secret):
    return struct.pack(">H", len(vendor_scrip)) + vendor_scrip + sealed_secret


def account_id(shard, number):
    """An account ID: its shard in the top byte, its number below."""
    return (shard << 56) | number


def broker_series(shard, number):
    """A broker-scrip series: its shard in the top byte, its number below."""
    return (shard << 24) | number


def refund_request(account):
    return struct.pack(">Q", account)


def refund_goods(account, credited, balance):
    return struct.pack(">QQQ", account, credited, balance)


RENEWAL_REQUEST = b"MC1-RENEW"


def split_scrip(data):
    """Body and certificate of concatenated scrip."""
    mac_len = 16 if data[0] == 1 else 32
    return data[:-mac_len], data[-mac_len:]


def check(name, got, want):
    if got != want:
        raise SystemExit(f"vector {name}: got {got!r}, want {want!r}")


def main(path):
    global SUITE
    doc = json.loads(Path(path).read_text())
    SUITE = doc["suite_id"]
    if SUITE not in (1, 2):
        raise SystemExit(f"{path}: unknown suite {SUITE}")
    h = bytes.fromhex
    count = 0
    for case in doc["scrip_body"]:
        body = encode_body(case["suite"], case["vendor"], int(case["value"]), int(case["id"]),
                           int(case["cust_id"]), int(case["expires_at"]), h(case["properties"]))
        check("scrip_body", body.hex(), case["encoding"])
        check("scrip_body id", int(case["id"]), (case["series"] << 32) | case["seq"])
        check("scrip_body selector", int(case["cust_id"]) >> 48, case["customer_selector"])
        check("scrip_body decode", decode_body(body)["value"], int(case["value"]))
        count += 1
    for case in doc["certificate"]:
        got = certificate(h(case["master_scrip_secret"]), h(case["body"]))
        check("certificate", got.hex(), case["certificate"])
        count += 1
    for case in doc["customer_secret"]:
        got = customer_secret(h(case["master_customer_secret"]), int(case["cust_id"]))
        check("customer_secret", got.hex(), case["customer_secret"])
        count += 1
    for case in doc["request_stamp"]:
        got = request_stamp(h(case["customer_secret"]), h(case["body"]), h(case["certificate"]),
                            h(case["request"]))
        check("request_stamp", got.hex(), case["request_stamp"])
        count += 1
    for case in doc["reply_stamp"]:
        change_body = case["change_body"] and h(case["change_body"])
        change_cert = case["change_certificate"] and h(case["change_certificate"])
        got = reply_stamp(h(case["customer_secret"]), h(case["request_stamp"]),
                          change_body, change_cert, h(case["goods"]))
        check("reply_stamp", got.hex(), case["reply_stamp"])
        count += 1
    for case in doc["seal"]:
        got = seal(h(case["key"]), case["purpose"], h(case["nonce"]), h(case["plaintext"]))
        check("seal", got.hex(), case["sealed"])
        check("open", open_sealed(h(case["key"]), case["purpose"], got).hex(), case["plaintext"])
        count += 1
    for case in doc["account_key"]:
        got = account_key(h(case["master_account_secret"]), int(case["account_id"]))
        check("account_key", got.hex(), case["account_key"])
        count += 1
    for case in doc["account_mac"]:
        got = account_mac(h(case["account_key"]), case["method"], int(case["account_id"]),
                          int(case["timestamp_ms"]), h(case["nonce"]), h(case["params"]))
        check("account_mac", got.hex(), case["mac"])
        count += 1
    for case in doc["exchange_request"]:
        check("exchange_request", exchange_request(case["vendor"], int(case["value"])).hex(),
              case["encoding"])
        count += 1
    for case in doc["exchange_goods"]:
        got = exchange_goods(h(case["vendor_scrip"]), h(case["sealed_customer_secret"]))
        check("exchange_goods", got.hex(), case["goods"])
        count += 1
    for case in doc["broker_ids"]:
        check("broker_ids account", account_id(case["shard"], int(case["account_number"])),
              int(case["account_id"]))
        check("broker_ids series", broker_series(case["shard"], case["series_number"]),
              case["series"])
        count += 1
    for case in doc["refund"]:
        secret, body, cert = h(case["customer_secret"]), h(case["body"]), h(case["certificate"])
        request = refund_request(int(case["account_id"]))
        check("refund request", request.hex(), case["request"])
        stamp = request_stamp(secret, body, cert, request)
        check("refund request_stamp", stamp.hex(), case["request_stamp"])
        goods = refund_goods(int(case["account_id"]), int(case["credited"]), int(case["balance"]))
        check("refund goods", goods.hex(), case["goods"])
        check("refund reply_stamp", reply_stamp(secret, stamp, None, None, goods).hex(),
              case["reply_stamp"])
        count += 1
    for case in doc["renewal"]:
        secret, body, cert = h(case["customer_secret"]), h(case["body"]), h(case["certificate"])
        check("renewal request", RENEWAL_REQUEST.hex(), case["request"])
        stamp = request_stamp(secret, body, cert, RENEWAL_REQUEST)
        check("renewal request_stamp", stamp.hex(), case["request_stamp"])
        sealed = seal(secret, 1, h(case["seal_nonce"]), h(case["fresh_customer_secret"]))
        check("renewal sealed secret", sealed.hex(), case["sealed_customer_secret"])
        goods = exchange_goods(h(case["fresh_scrip"]), sealed)
        check("renewal goods", goods.hex(), case["goods"])
        check("renewal reply_stamp", reply_stamp(secret, stamp, None, None, goods).hex(),
              case["reply_stamp"])
        check("renewal fresh scrip", len(split_scrip(h(case["fresh_scrip"]))[1]),
              16 if SUITE == 1 else 32)
        count += 1
    for case in doc["payment"]:
        body, cert = h(case["scrip_body"]), h(case["scrip_certificate"])
        secret, item = h(case["customer_secret"]), h(case["item"])
        variant = case["variant"]
        if variant == "private":
            sent = seal(secret, 2, h(case["request_nonce"]), item)
        else:
            sent = item
        check("payment request", sent.hex(), case["request"])
        stamp = None if variant == "clear" else request_stamp(secret, body, cert, item)
        check("payment request_stamp", stamp and stamp.hex(), case["request_stamp"])
        paid = decode_body(body)
        change = decode_body(h(case["change_body"]))
        check("payment change value", change["value"], paid["value"] - int(case["price"]))
        check("payment change cust_id", change["cust_id"], paid["cust_id"])
        goods = h(case["goods"])
        if stamp is not None:
            got = reply_stamp(secret, stamp, h(case["change_body"]),
                              h(case["change_certificate"]), goods)
            check("payment reply_stamp", got.hex(), case["reply_stamp"])
        plain = open_sealed(secret, 3, goods) if variant == "private" else goods
        check("payment goods", plain.hex(), case["plain_goods"])
        count += 1
    print(f"{path}: {doc['suite']} suite, {count} passed, 0 failed")


if __name__ == "__main__":
    folder = Path(__file__).resolve().parents[1] / "test-vectors"
    defaults = [folder / "classic.json", folder / "modern.json"]
    for vector_file in sys.argv[1:] or defaults:
        main(vector_file)
