"""Search on PostgreSQL matches exactly what SQLite's FTS5 matches.

1. The tokenizer of storage/postgres/search_doc.py against SQLite's unicode61 (remove_diacritics
   2, tokenchars '_-@'), code point by code point (fts5_chars.py is that table).
2. One corpus in SQLite (a real SqliteStore) and in PostgreSQL (the same rows): ~40 queries of
   the search language give the same ids in the same order, page by page.
"""

from __future__ import annotations

import sqlite3

import pytest

from recalled_lite.cursors import Cursor
from recalled_lite.search_query import parse_search_query
from recalled_lite.storage.postgres import search_doc
from recalled_lite.storage.postgres.reads import search_page
from pg_reads_support import WORDS, build_sqlite, copy_to_pg, drop_pg, corpus, pg_read, run_sqlite
from pg_support import create_database, pg_database  # noqa: F401 (a fixture)

_TOKENIZE = "unicode61 remove_diacritics 2 tokenchars '_-@'"


def derive_fts5_table() -> dict[int, str | None]:
    """What FTS5 makes of every code point between two letters: None (a separator) or the
    text it keeps in the token ('' when dropped). The source of fts5_chars.py."""
    conn = sqlite3.connect(":memory:")
    conn.execute(f'CREATE VIRTUAL TABLE f USING fts5(a, tokenize = "{_TOKENIZE}")')
    conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(f, instance)")
    cps = [cp for cp in range(1, 0x110000) if not 0xD800 <= cp < 0xE000]
    conn.executemany("INSERT INTO f (rowid, a) VALUES (?, ?)", [(cp, "x" + chr(cp) + "y") for cp in cps])
    found: dict[int, list[tuple[int, str]]] = {}
    for term, doc, _col, offset in conn.execute("SELECT term, doc, col, offset FROM v"):
        found.setdefault(doc, []).append((offset, term))
    table: dict[int, str | None] = {}
    for cp in cps:
        terms = [t for _, t in sorted(found[cp])]
        table[cp] = None if terms == ["x", "y"] else terms[0][1:-1]
    return table


def test_tokenizer_matches_fts5_on_every_code_point():
    table = derive_fts5_table()
    wrong = []
    for cp, kept in table.items():
        got = search_doc.tokens("x" + chr(cp) + "y")
        want = ["x", "y"] if kept is None else ["x" + kept + "y"]
        if got != want:
            wrong.append((hex(cp), got, want))
    assert not wrong, wrong[:20]


def test_tokenizer_matches_fts5_on_corpus_text():
    conn = sqlite3.connect(":memory:")
    conn.execute(f'CREATE VIRTUAL TABLE f USING fts5(a, tokenize = "{_TOKENIZE}")')
    conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(f, instance)")
    texts = [" ".join(WORDS[i:i + 5]) for i in range(len(WORDS))] + [
        "  leading and trailing  ", "tab\tnew\nline", "a\u0301b combining", "ﬁ ligature", "½ ¼"]
    conn.executemany("INSERT INTO f (rowid, a) VALUES (?, ?)", list(enumerate(texts, start=1)))
    fts5: dict[int, list[tuple[int, str]]] = {}
    for term, doc, _col, offset in conn.execute("SELECT term, doc, col, offset FROM v"):
        fts5.setdefault(doc, []).append((offset, term))
    for i, text in enumerate(texts, start=1):
        assert search_doc.tokens(text) == [t for _, t in sorted(fts5.get(i, []))], text


def test_document_keeps_phrases_inside_one_column():
    doc = search_doc.search_document(("invoice.paid", "user_1 Ann", "org_acme", "invoice inv_1", "paid"))
    assert doc.startswith("'invoice':1,")
    # 'paid' of the action (2) and of the metadata (after gaps): positions never adjoin
    # across a column boundary.
    assert "'paid':2,12 'user_1':4 'ann':5 'org_acme':7 'inv_1':10" in doc


QUERIES = [
    "invoice", "INVOICE", "invoi*", "inv*", "café", "cafe", "CAFÉ", "caf*", "naive", "naïve",
    "resume", "résumé", "strasse", "straße", "µ-service", "μ-service", "user@example.com",
    "snake_case_word", "dash-word", "dash", "inv_42", "42", '"café au lait"', '"au lait"',
    '"invoice paid"', "hello.world", "hello", "a.b.c", '"b c"', "日本語", "東京", "istanbul",
    "déjà-vu", "ÉCOLE", "ecole", "q&a", "don't", "C++", "50%", "§7", "→arrow", "«quoted»",
    "emoji🙂word", "-invoice", "-invoice -paid", "paid -refund", "invoice -\"invoice paid\"",
    "action:invoice.paid", "action:invoice.*", "-action:invoice.*", "actor:user_1", "-actor:user_1",
    "org:org_acme", "-org:org_acme", "organization:org_globex paid", "target:invoice",
    "target:invoice:inv_3", "-target:user", "occurred:>=2025-10-15", "occurred:<2025-10-09 invoice",
    "-occurred:2025-10-09", "invoice action:user.*", "actor:user@example.com cafe*", "x", "-x",
    "!!!", "-!!!", "→", "§", "-§", "paid §", "urn:x:1", "09:12", "", "user.login", '"user login"',
    "svc-billing", "svc", "-svc*",
]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    path = tmp_path_factory.mktemp("parity") / "p.db"
    build_sqlite(path, corpus(400))
    url = create_database("parity")
    try:
        copy_to_pg(path, url)
        yield path, url
    finally:
        drop_pg(url)


def _walk(fetch, limit):
    ids, cursor = [], None
    while True:
        page, more = fetch(cursor, limit)
        ids += [e.id for e in page]
        if not more:
            return ids
        cursor = Cursor(page[-1].occurred_at, page[-1].seq)


@pytest.mark.parametrize("wall", [None, "org_acme"])
def test_queries_give_the_same_ids_in_the_same_order(both, wall):
    path, url = both
    mismatches, matched = [], 0
    for q in QUERIES:
        query = parse_search_query(q)
        lite = run_sqlite(path, "search_events", query, wall, 500, None)
        pg = pg_read(url, search_page, query, wall, 500, None)
        lite_ids, pg_ids = [e.id for e in lite[0]], [e.id for e in pg[0]]
        matched += bool(lite_ids)
        if lite_ids != pg_ids or lite[1] != pg[1]:
            mismatches.append((q, len(lite_ids), len(pg_ids)))
    assert not mismatches, mismatches
    assert matched > len(QUERIES) // 2  # the table is not vacuous: most queries match something


def test_pages_walk_the_same_ids(both):
    path, url = both
    for q in ["invoice", "-refund", "org:org_globex", "caf*", ""]:
        query = parse_search_query(q)
        lite = _walk(lambda c, n: run_sqlite(path, "search_events", query, None, n, c), 37)
        pg = _walk(lambda c, n: pg_read(url, search_page, query, None, n, c), 37)
        assert lite == pg and len(set(pg)) == len(pg), q


# --- the same table through two real servers ---------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    from pg_reads_support import ServerPair

    pair = ServerPair(tmp_path_factory.mktemp("psrv"), corpus(300, seed=21))
    try:
        bound = [srv.create_key(["events:read"], organization="org_acme") for srv in pair.servers]
        yield pair, bound
    finally:
        pair.close()


def test_servers_answer_every_query_alike(servers):
    pair, bound = servers
    nonempty = 0
    for q in QUERIES:
        lite = pair.walk(pair.lite, "/v1/events/search", {"q": q, "limit": 40})
        pg = pair.walk(pair.pg, "/v1/events/search", {"q": q, "limit": 40})
        assert pg == lite, q
        nonempty += bool(pg)
        lite_b = pair.walk(pair.lite, "/v1/events/search", {"q": q, "limit": 100}, key=bound[0])
        pg_b = pair.walk(pair.pg, "/v1/events/search", {"q": q, "limit": 100}, key=bound[1])
        assert pg_b == lite_b, ("bound", q)
    assert nonempty > len(QUERIES) // 2


def test_servers_refuse_the_same_bad_queries(servers):
    pair, _ = servers
    for q in ['"unterminated', "-", "*", 'a"b', "occurred:>=yesterday", "x" * 2000]:
        lite, pg = pair.get_both("/v1/events/search", {"q": q})
        assert lite.status_code == pg.status_code == 400, q
        assert pg.json()["error"] == lite.json()["error"], q


def test_documents_past_postgresql_limits_still_load_and_match(pg_database):
    """A token longer than a lexeme may be, a word repeated past 256 positions, and more than
    16,383 tokens: the document still casts to a tsvector, and whole words still match."""
    import psycopg

    from recalled_lite.search_query import TextTerm
    from recalled_lite.storage.postgres.search_sql import text_predicate

    long_word = "z" * 3000
    metadata = " ".join(["filler"] * 17_000 + ["needle", "tail", long_word, "Ünïcödé"])
    doc = search_doc.search_document(("a.b", "actor", "org", "", metadata))

    def matches(*terms):
        clause, params = text_predicate(list(terms))
        with psycopg.connect(pg_database) as conn:
            return conn.execute(f"SELECT {clause.replace('events.search', '%s::tsvector')}",
                                [doc, *params]).fetchone()[0]

    assert matches(TextTerm("needle"))
    assert matches(TextTerm(long_word.upper()))  # hashed on both sides
    assert matches(TextTerm("unicode"))
    assert matches(TextTerm("a.b", phrase=True))  # within the first positions: exact
    assert not matches(TextTerm("missing"))
    assert not matches(TextTerm("actor org", phrase=True))  # never across columns
