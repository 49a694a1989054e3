"""An independent verifier of the Merkle tree, checkpoints and proofs, written from
docs/integrity.md §7-§10 alone: it imports nothing from recalled_lite, only hashlib and
`cryptography` (for Ed25519), and talks to a real server over HTTP.

- RFC 6962 test vectors (empty tree, one leaf, the 8-leaf tree of the CT suite) hold for it;
- a 10,000-event log: every checkpoint's signature, every event's inclusion proof, the
  consistency proofs between 20 checkpoints, the tiles and entry bundles, all checked.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from conftest import ServerProcess


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# -- §7: hashing ------------------------------------------------------------------------------


def leaf_hash(data: bytes) -> bytes:
    return sha256(b"\x00" + data)


def mth(leaf_hashes: list[bytes]) -> bytes:
    n = len(leaf_hashes)
    if n == 0:
        return sha256(b"")
    if n == 1:
        return leaf_hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return sha256(b"\x01" + mth(leaf_hashes[:k]) + mth(leaf_hashes[k:]))


def event_leaf(event: dict) -> bytes:
    return leaf_hash(event["hash"].encode() + b"\n" + event["signature"].encode())


# -- §9: proofs -------------------------------------------------------------------------------


def root_from_inclusion(index, size, leaf, proof):
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = sha256(b"\x01" + p + r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = sha256(b"\x01" + r + p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def consistent(m, n, root_m, root_n, proof):
    if m == n:
        return not proof and root_m == root_n
    if m == 0:
        return not proof
    if not proof:
        return False
    if m & (m - 1) == 0:
        proof = [root_m] + proof
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = sha256(b"\x01" + c + fr)
            sr = sha256(b"\x01" + c + sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = sha256(b"\x01" + sr + c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root_m and sr == root_n


# -- §8: notes and checkpoints ----------------------------------------------------------------


def parse_vkey(vkey: str):
    name, key_id, key = vkey.split("+", 2)
    raw = base64.b64decode(key)
    assert raw[0] == 1 and len(raw) == 33
    assert sha256(name.encode() + b"\n" + raw)[:4].hex() == key_id  # the key id as §8 defines it
    return name, bytes.fromhex(key_id), Ed25519PublicKey.from_public_bytes(raw[1:])


def open_checkpoint(note: str, vkey) -> tuple[str, int, bytes]:
    """(origin, size, root) of a signed checkpoint, after checking its signature."""
    name, key_id, public = vkey
    split = note.rindex("\n\n")
    text, lines = note[: split + 1], note[split + 2:].splitlines()
    verified = False
    for line in lines:
        assert line.startswith("\u2014 ")
        signer, blob64 = line[2:].split(" ")
        blob = base64.b64decode(blob64)
        if signer != name or blob[:4] != key_id:
            continue  # another key's signature: ignored
        public.verify(blob[4:], text.encode())  # raises InvalidSignature
        verified = True
    assert verified, "no signature by the verifier key"
    origin, size, root = text.rstrip("\n").split("\n")[:3]
    assert str(int(size)) == size
    return origin, int(size), base64.b64decode(root)


# -- RFC 6962 vectors -------------------------------------------------------------------------

VECTOR_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
                 bytes(range(0x50, 0x58)), bytes(range(0x60, 0x70))]
VECTOR_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
VECTOR_INCLUSION = [  # (1-based leaf, tree size, proof), the CT suite's
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (3, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (2, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
VECTOR_CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]


def test_the_independent_verifier_matches_the_rfc6962_vectors():
    hashes = [leaf_hash(x) for x in VECTOR_LEAVES]
    assert mth([]).hex() == VECTOR_ROOTS[0]  # the empty tree
    assert mth(hashes[:1]).hex() == VECTOR_ROOTS[1]  # one leaf (the empty string)
    for size in range(9):
        assert mth(hashes[:size]).hex() == VECTOR_ROOTS[size]
    for leaf, size, proof in VECTOR_INCLUSION:
        proof = [bytes.fromhex(p) for p in proof]
        assert root_from_inclusion(leaf - 1, size, hashes[leaf - 1], proof).hex() == VECTOR_ROOTS[size]
        if proof:
            assert root_from_inclusion(leaf - 1, size, hashes[leaf - 1], proof[:-1]) != bytes.fromhex(VECTOR_ROOTS[size])
    for m, n, proof in VECTOR_CONSISTENCY:
        proof = [bytes.fromhex(p) for p in proof]
        assert consistent(m, n, bytes.fromhex(VECTOR_ROOTS[m]), bytes.fromhex(VECTOR_ROOTS[n]), proof)
        if proof:
            assert not consistent(m, n, bytes.fromhex(VECTOR_ROOTS[m]), bytes.fromhex(VECTOR_ROOTS[n]), proof[1:])


# -- the real server --------------------------------------------------------------------------

N_EVENTS, N_CHECKPOINTS = 10_000, 20


def b64d(values):
    return [base64.b64decode(v) for v in values]


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("independent"),
                        # An independent verifier walking every proof and tile at full speed
                        # (hundreds of public requests in seconds): a client this operator
                        # trusts, so the per-address budget of requests without a key is off.
                        config_text="[checkpoints]\ninterval_seconds = 3600.0\n"
                                    "[abuse]\nper_second = 0.0\n").start()
    sizes = []
    with srv.client() as c:
        per = N_EVENTS // N_CHECKPOINTS
        # The server's own audit events (the bootstrap key's) are leaves too: the first round
        # tops them up, so every checkpoint still lands on a multiple of `per`.
        existing = c.get("/readyz").json()["data"]["seq"]
        for round_ in range(N_CHECKPOINTS):
            events = [{"action": f"ind.r{round_}", "actor": {"id": f"user_{i % 37}", "email": f"u{i}@x.test"},
                       "metadata": {"i": i, "f": i / 7}, "targets": [{"type": "doc", "id": f"d{i % 5}"}]}
                      for i in range(existing if round_ == 0 else 0, per)]
            for start in range(0, len(events), 250):
                r = c.post("/v1/events/batch", json={"events": events[start:start + 250]})
                assert r.status_code == 200, r.text
            made = c.post("/v1/checkpoint")
            assert made.status_code == 200 and made.json()["data"]["created"], made.text
            sizes.append(made.json()["data"]["treeSize"])
        export = c.get("/v1/exports", params={"format": "ndjson"})
        assert export.status_code == 200
    lines = [json.loads(line) for line in export.text.splitlines()]
    head, events = lines[-1]["head"], lines[:-1]
    yield srv, events, head, sizes
    srv.kill()


def test_checkpoints_and_roots(log):
    srv, events, head, sizes = log
    assert sizes == [(i + 1) * (N_EVENTS // N_CHECKPOINTS) for i in range(N_CHECKPOINTS)]
    assert len(events) == N_EVENTS == head["seq"]
    with srv.client(key=None) as anon:
        vkey_text = anon.get("/v1/checkpoint/key").json()["data"]["current"]
        vkey = parse_vkey(vkey_text)
        listed, cursor = [], None
        while True:
            page = anon.get("/v1/checkpoints", params={"limit": 7, **({"cursor": cursor} if cursor else {})}).json()
            listed += page["data"]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        latest = anon.get("/v1/checkpoint")
        assert latest.headers["content-type"] == "text/plain; charset=utf-8"
        assert anon.get("/checkpoint").text == latest.text  # where tlog-tiles clients look
    leaves = [event_leaf(e) for e in events]
    roots = {}
    # the start's empty checkpoint, then one per round; the export's own is the last round's
    # (the start's checkpoint holds the server's own audit events, written at its first start)
    at_start = sum(1 for e in events if e["action"].startswith("recalled."))
    assert [c["treeSize"] for c in listed] == [at_start] + sizes
    for item in listed:
        origin, size, root = open_checkpoint(item["checkpoint"], vkey)
        assert origin == f"recalled-lite/{events[0]['projectId']}"
        assert size == item["treeSize"] and base64.b64decode(item["rootHash"]) == root
        assert root == mth(leaves[:size]), f"checkpoint {size} does not commit to the first {size} events"
        roots[size] = root
    assert open_checkpoint(latest.text, vkey)[1:] == (N_EVENTS, roots[N_EVENTS])
    assert open_checkpoint(head["checkpoint"], vkey)[1:] == (N_EVENTS, roots[N_EVENTS])
    # a tampered note does not verify
    tampered = latest.text.replace(f"\n{N_EVENTS}\n", f"\n{N_EVENTS - 1}\n")
    with pytest.raises(InvalidSignature):
        open_checkpoint(tampered, vkey)


def test_every_event_has_a_valid_inclusion_proof(log):
    srv, events, head, sizes = log
    leaves = [event_leaf(e) for e in events]
    with srv.client(key=None) as anon:
        vkey = parse_vkey(anon.get("/v1/checkpoint/key").json()["data"]["current"])
    final_root = mth(leaves)

    async def fetch_all():
        semaphore = asyncio.Semaphore(16)
        async with srv.async_client(timeout=60.0) as c:
            async def one(event):
                async with semaphore:
                    r = await c.get(f"/v1/events/{event['id']}/proof", params={"tree_size": N_EVENTS})
                    assert r.status_code == 200, r.text
                    return event, r.json()["data"]
            return await asyncio.gather(*(one(e) for e in events))

    checked_notes = set()
    for event, proof in asyncio.run(fetch_all()):
        index = event["seq"] - 1
        assert proof["leafIndex"] == index and proof["treeSize"] == N_EVENTS
        assert base64.b64decode(proof["leafHash"]) == leaves[index]
        assert root_from_inclusion(index, N_EVENTS, leaves[index], b64d(proof["proof"])) == final_root
        if proof["checkpoint"] not in checked_notes:
            assert open_checkpoint(proof["checkpoint"], vkey)[1:] == (N_EVENTS, final_root)
            checked_notes.add(proof["checkpoint"])
    # ... and to older checkpoints, for a sample of events, including the default (latest)
    with srv.client() as c:
        for size in sizes[:5]:
            for seq in {1, size // 2, size}:
                proof = c.get(f"/v1/events/{events[seq - 1]['id']}/proof", params={"tree_size": size}).json()["data"]
                assert root_from_inclusion(seq - 1, size, leaves[seq - 1], b64d(proof["proof"])) == mth(leaves[:size])
        default = c.get(f"/v1/events/{events[42]['id']}/proof").json()["data"]
        assert default["treeSize"] == N_EVENTS
        wrong = b64d(default["proof"])
        wrong[3] = bytes([wrong[3][0] ^ 1]) + wrong[3][1:]
        assert root_from_inclusion(42, N_EVENTS, leaves[42], wrong) != final_root


def test_consistency_between_the_20_checkpoints(log):
    srv, events, head, sizes = log
    leaves = [event_leaf(e) for e in events]
    roots = {size: mth(leaves[:size]) for size in sizes}
    pairs = [(a, b) for i, a in enumerate(sizes) for b in sizes[i:]]
    with srv.client(key=None) as anon:
        for m, n in pairs:
            r = anon.get("/v1/checkpoint/consistency", params={"from": m, "to": n})
            assert r.status_code == 200, r.text
            data = r.json()["data"]
            assert (data["from"], data["to"]) == (m, n)
            proof = b64d(data["proof"])
            assert consistent(m, n, roots[m], roots[n], proof), (m, n)
            if proof:
                assert not consistent(m, n, roots[m], sha256(b"other"), proof)
        # from the empty tree, and from a size that is a power of two
        assert anon.get("/v1/checkpoint/consistency", params={"from": 0, "to": 500}).json()["data"]["proof"] == []
        data = anon.get("/v1/checkpoint/consistency", params={"from": 4096, "to": N_EVENTS}).json()["data"]
        assert consistent(4096, N_EVENTS, mth(leaves[:4096]), roots[N_EVENTS], b64d(data["proof"]))


def test_tiles_and_entry_bundles_hold_the_tree(log):
    srv, events, head, sizes = log
    leaves = [event_leaf(e) for e in events]
    with srv.client(key=None) as anon:
        def tile(path):
            r = anon.get("/tile/" + path)
            assert r.status_code == 200, (path, r.text)
            assert r.headers["content-type"] == "application/octet-stream"
            return r.content
        full, width = divmod(N_EVENTS, 256)  # 39 full level-0 tiles and one of 16
        level0 = b"".join(tile(f"0/{n:03d}") for n in range(full)) + tile(f"0/{full:03d}.p/{width}")
        assert level0 == b"".join(leaves)
        level1 = tile(f"1/000.p/{full}")
        assert level1 == b"".join(mth(leaves[n * 256:(n + 1) * 256]) for n in range(full))
        assert anon.get(f"/tile/0/{full:03d}").status_code == 404  # not full yet
        assert anon.get(f"/tile/0/{full:03d}.p/{width + 1}").status_code == 404  # wider than the tree
        bundle = tile("entries/001")
        entries, at = [], 0
        while at < len(bundle):
            (length,) = struct.unpack(">H", bundle[at:at + 2])
            entries.append(bundle[at + 2:at + 2 + length])
            at += 2 + length
        assert len(entries) == 256
        assert [leaf_hash(e) for e in entries] == leaves[256:512]
        assert entries[0] == (events[256]["hash"] + "\n" + events[256]["signature"]).encode()
        for personal in (events[256]["actor"]["email"], events[256]["actor"]["id"]):
            assert personal.encode() not in bundle
