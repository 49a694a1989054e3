"""The pure tree, tile and signed-note code against published vectors and a reference tree.

Vectors:
- RFC 6962 roots, inclusion and consistency proofs of the 8-leaf test tree (the Certificate
  Transparency C++ suite, as carried by transparency-dev/merkle and Go's sumdb/tlog tests);
- transparency-dev/merkle testdata probes (happy paths and rejected manglings);
- Go's x/mod/sumdb/note TestSign output (byte-exact), and the C2SP signed-note example;
- the C2SP tlog-tiles worked example (a tree of 70,000 leaves) and index encoding.
"""

from __future__ import annotations

import base64
import hashlib
import random

import pytest

from recalled_lite.integrity import merkle, note
from recalled_lite.integrity.checkpoint import (
    CheckpointError, event_leaf_hash, format_checkpoint, leaf_data, parse_checkpoint,
)
from recalled_lite.integrity.tiles import (
    TILE_WIDTH, TileNodes, TreeEdge, encode_index, parse_tile_path, tile_path, tile_width, tiles_for_size,
)

h = bytes.fromhex
LEAVES = [h(""), h("00"), h("10"), h("2021"), h("3031"), h("40414243"), h("5051525354555657"),
          h("606162636465666768696a6b6c6d6e6f")]
ROOTS = [
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
# (leaf, 1-based as in the CT suite; tree size; proof)
INCLUSION = [
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
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
# transparency-dev/merkle testdata/{inclusion,consistency}/*/happy-path.json (base64, as published)
PROBE_INCLUSION = {
    "leafIdx": 0, "treeSize": 8, "root": "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
    "leafHash": "bjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=",
    "proof": ["lqKW0iTyhcZ77pPDD4owkVfw2qNdxbh+QQt4YwoJz8c=", "Xwg/ChozygdqlSeYMlgNs+DvRYS9/x9UyKNg9Q3jAx4=",
              "a0eq8p7jwq+a+Im8H7klTavTEXfxYjLdaqsDXKOb9uQ="],
}
PROBE_CONSISTENCY = {
    "size1": 6, "size2": 8, "root1": "duZ9rbzfHhDht03cYIq9L5jfsW+851J3tSMqEn8gh+8=",
    "root2": "XcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=",
    "proof": ["DrxdNDf74tsVi58Sah0RjjCBgQMdCpSfje3t68VY72o=", "yoVOoSjtBQtBs1/8G4e46yveRh6eO1WW7Oa51ZdaCuA=",
              "037kGJdt2VdTwcc4Yrk5j6Kiz5tP8P3+izDNlSCWFLc="],
}
b64 = base64.b64decode


def list_nodes(leaf_hashes):
    """A node source over an in-memory list of leaf hashes (the reference)."""
    def node(level, index):
        return merkle.root_from_leaf_hashes(leaf_hashes[index << level:(index + 1) << level])
    return node


def test_rfc6962_roots_of_the_test_tree():
    hashes = [merkle.leaf_hash(leaf) for leaf in LEAVES]
    assert merkle.EMPTY_ROOT.hex() == ROOTS[0]
    for size in range(9):
        assert merkle.root_from_leaf_hashes(hashes[:size]).hex() == ROOTS[size]
        edge, _ = TreeEdge().append(hashes[:size])
        assert edge.root().hex() == ROOTS[size]


def test_rfc6962_inclusion_vectors_are_produced_and_verified():
    hashes = [merkle.leaf_hash(leaf) for leaf in LEAVES]
    for leaf, size, proof in INCLUSION:
        expected = [h(p) for p in proof]
        assert merkle.inclusion_proof(leaf - 1, size, list_nodes(hashes[:size])) == expected
        assert merkle.verify_inclusion(leaf - 1, size, hashes[leaf - 1], expected, h(ROOTS[size]))
        if expected:
            bad = list(expected)
            bad[0] = bytes([bad[0][0] ^ 1]) + bad[0][1:]
            assert not merkle.verify_inclusion(leaf - 1, size, hashes[leaf - 1], bad, h(ROOTS[size]))
            assert not merkle.verify_inclusion(leaf - 1, size, hashes[leaf - 1], expected[:-1], h(ROOTS[size]))
        assert not merkle.verify_inclusion(leaf - 1, size, hashes[leaf % 8], expected, h(ROOTS[size])) or leaf % 8 == leaf - 1
    assert not merkle.verify_inclusion(0, 0, hashes[0], [], merkle.EMPTY_ROOT)


def test_rfc6962_consistency_vectors_are_produced_and_verified():
    hashes = [merkle.leaf_hash(leaf) for leaf in LEAVES]
    for old, new, proof in CONSISTENCY:
        expected = [h(p) for p in proof]
        assert merkle.consistency_proof(old, new, list_nodes(hashes[:new])) == expected
        assert merkle.verify_consistency(old, new, h(ROOTS[old]), h(ROOTS[new]), expected)
        assert not merkle.verify_consistency(old, new, h(ROOTS[new]), h(ROOTS[old]), expected) or old == new
        if expected:
            assert not merkle.verify_consistency(old, new, h(ROOTS[old]), h(ROOTS[new]), expected[:-1])


def test_transparency_dev_probes():
    p = PROBE_INCLUSION
    proof = [b64(x) for x in p["proof"]]
    assert merkle.verify_inclusion(p["leafIdx"], p["treeSize"], b64(p["leafHash"]), proof, b64(p["root"]))
    assert not merkle.verify_inclusion(p["leafIdx"] ^ 2, p["treeSize"], b64(p["leafHash"]), proof, b64(p["root"]))
    assert not merkle.verify_inclusion(p["leafIdx"], p["treeSize"] * 2, b64(p["leafHash"]), proof, b64(p["root"]))
    assert not merkle.verify_inclusion(p["leafIdx"], p["treeSize"], b64(p["leafHash"]), proof + [proof[0]],
                                       b64(p["root"]))
    c = PROBE_CONSISTENCY
    proof = [b64(x) for x in c["proof"]]
    assert merkle.verify_consistency(c["size1"], c["size2"], b64(c["root1"]), b64(c["root2"]), proof)
    assert not merkle.verify_consistency(c["size1"], c["size2"], b64(c["root2"]), b64(c["root1"]), proof)
    assert not merkle.verify_consistency(c["size1"] + 1, c["size2"], b64(c["root1"]), b64(c["root2"]), proof)
    assert not merkle.verify_consistency(c["size1"], c["size2"], b64(c["root1"]), b64(c["root2"]), [b"\0" * 32] + proof)
    # the edge cases of transparency-dev/merkle testdata/consistency/additional
    root = b64(c["root1"])
    assert merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    assert merkle.verify_consistency(0, 6, merkle.EMPTY_ROOT, root, [])
    assert not merkle.verify_consistency(0, 6, merkle.EMPTY_ROOT, root, [root])
    assert not merkle.verify_consistency(1, 1, root, b64(c["root2"]), [])
    assert not merkle.verify_consistency(1, 1, root, root, [root])
    assert not merkle.verify_consistency(2, 1, root, root, [])


def test_tree_edge_and_tile_proofs_match_the_reference():
    rng = random.Random(6962)
    hashes = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(70_000)]
    edge, tiles = TreeEdge(), {}
    sizes = []
    while edge.size < len(hashes):
        step = rng.choice([1, 1, 2, 3, 31, 255, 256, 257, 1000, 4096])
        edge, written = edge.append(hashes[edge.size:edge.size + step])
        for level, index, had, data in written:
            old = tiles.get((level, index), b"")
            assert data.startswith(old) and len(data) > len(old)  # tiles only grow
            assert had * 32 == len(old)  # and the edge says how far they had grown
            tiles[(level, index)] = data
        sizes.append(edge.size)
        reloaded = TreeEdge.load(edge.size, lambda lv, ix: tiles.get((lv, ix)))
        assert reloaded.partial == edge.partial
    check_sizes = [1, 2, 255, 256, 257, 511, 65535, 65536, 65537, 70_000] + rng.sample(sizes, 10)
    for size in check_sizes:
        reference = list_nodes(hashes[:size])
        nodes = TileNodes(size, lambda lv, ix: tiles.get((lv, ix)))
        root = merkle.root_from_leaf_hashes(hashes[:size])
        assert merkle.range_hash(0, size, nodes) == root
        for index in {0, size - 1, rng.randrange(size)}:
            proof = merkle.inclusion_proof(index, size, nodes)
            assert proof == merkle.inclusion_proof(index, size, reference)
            assert merkle.verify_inclusion(index, size, hashes[index], proof, root)
        old = rng.randrange(1, size + 1)
        proof = merkle.consistency_proof(old, size, nodes)
        assert merkle.verify_consistency(old, size, merkle.root_from_leaf_hashes(hashes[:old]), root, proof)
    # the final edge's root is the whole tree's
    assert edge.root() == merkle.root_from_leaf_hashes(hashes)


def test_tile_layout_follows_the_c2sp_example():
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial level 0
    # tile of width 112, one full level 1 tile, one partial level 1 tile of width 17, and one
    # partial level 2 tile of width 1"
    assert tiles_for_size(70_000) == [(0, 273, 112), (1, 1, 17), (2, 0, 1)]
    assert tile_width(0, 272, 70_000) == TILE_WIDTH and tile_width(1, 0, 70_000) == TILE_WIDTH
    assert tiles_for_size(256) == [(1, 0, 1)]
    assert tiles_for_size(0) == []


def test_tile_paths():
    assert encode_index(1234067) == "x001/x234/067"
    assert encode_index(0) == "000" and encode_index(1000) == "x001/000"
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(2, 5, 17) == "tile/2/005.p/17"
    assert tile_path("entries", 3, 9) == "tile/entries/003.p/9"
    ref = parse_tile_path("0/x001/x234/067")
    assert (ref.level, ref.index, ref.width) == (0, 1234067, 256)
    ref = parse_tile_path("entries/003.p/9")
    assert (ref.level, ref.index, ref.width) == ("entries", 3, 9)
    for bad in ["0/1", "0/0001", "00/000", "64/000", "0/x000/001", "0/001/x002", "0/000.p/0",
                "0/000.p/256", "0/000.p/07", "0/000.p/", "x/000", "0", "0/", "1/x001", "-1/000"]:
        assert parse_tile_path(bad) is None, bad


def test_go_note_sign_vector_is_reproduced_byte_for_byte():
    skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    text = ("If you think cryptography is the answer to your problem,\n"
            "then you don't know what your problem is.\n")
    signer = note.parse_signer(skey)
    assert signer.verifier.vkey == vkey
    signed = note.sign(text, signer)
    assert signed == (text + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2p"
                      "ZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n")
    opened = note.open_note(signed, [note.parse_verifier(vkey)])
    assert opened.text == text
    # C2SP signed-note's example
    example = ("This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2O"
               "NncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n")
    foo = note.parse_verifier("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
    assert note.open_note(example, [foo]).text == "This is an example message.\n"
    with pytest.raises(note.NoteError):
        note.open_note(example.replace("example message", "exemple message"), [foo])
    with pytest.raises(note.NoteError):  # signed, but not by a key we know
        note.open_note(example, [note.parse_verifier(vkey)])


def test_note_keys_reject_manglings():
    vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    for i in range(len(vkey)):
        changed = vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1:]
        with pytest.raises(note.NoteError):
            note.parse_verifier(changed)
    for bad in [vkey[:-1], vkey[1:], "PeterNeumann+c74f20a3", "a b+c74f20a3+ARpc"]:
        with pytest.raises(note.NoteError):
            note.parse_verifier(bad)
    skey, vkey2 = note.generate_key("recalled-lite/proj_x")
    signer = note.parse_signer(skey)
    assert signer.verifier.vkey == vkey2 and skey.startswith("PRIVATE+KEY+recalled-lite/proj_x+")
    with pytest.raises(note.NoteError):
        note.parse_signer(skey.replace("+KEY+", "+KEE+"))


def test_checkpoint_format_and_leaf_definition():
    root = h(ROOTS[8])
    text = format_checkpoint("recalled-lite/proj_1", 8, root)
    assert text == "recalled-lite/proj_1\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"
    parsed = parse_checkpoint(text)
    assert (parsed.origin, parsed.tree_size, parsed.root) == ("recalled-lite/proj_1", 8, root)
    for bad in ["a\n08\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n", "a\n8\nXcna\n", "a\n8\n",
                "a\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=", "\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n"]:
        with pytest.raises(CheckpointError):
            parse_checkpoint(bad)
    assert leaf_data("sha256:ab", "hmac-sha256:cd") == b"sha256:ab\nhmac-sha256:cd"
    assert event_leaf_hash("sha256:ab", "hmac-sha256:cd") == hashlib.sha256(b"\x00sha256:ab\nhmac-sha256:cd").digest()
