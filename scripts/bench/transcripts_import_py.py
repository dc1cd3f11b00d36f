#!/usr/bin/env python3
"""Reference for the import benchmark: the same OpenAI JSONL into SQLite with an FTS5
index from Python's standard library (json + sqlite3, one transaction), as a researcher
would script it. Usage: python3 transcripts_import_py.py FILE.jsonl OUT.db"""
import json
import sqlite3
import sys
import time

t0 = time.time()
src, out = sys.argv[1], sys.argv[2]
db = sqlite3.connect(out)
db.executescript(
    """
CREATE TABLE runs(id INTEGER PRIMARY KEY, metadata TEXT);
CREATE TABLE messages(id INTEGER PRIMARY KEY, run_id INTEGER, idx INTEGER, role TEXT, content TEXT);
CREATE VIRTUAL TABLE messages_fts USING fts5(content, content='messages', content_rowid='id',
    tokenize='porter unicode61 remove_diacritics 2');
"""
)
with db:
    mid = 0
    for rid, line in enumerate(open(src, encoding="utf-8")):
        r = json.loads(line)
        db.execute("INSERT INTO runs VALUES (?, ?)", (rid, json.dumps(r.get("metadata", {}))))
        for i, m in enumerate(r["messages"]):
            mid += 1
            db.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?)", (mid, rid, i, m["role"], m["content"]))
            db.execute("INSERT INTO messages_fts(rowid, content) VALUES (?, ?)", (mid, m["content"]))
t1 = time.time()
hits = db.execute(
    "SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? ORDER BY bm25(messages_fts) LIMIT 20",
    ('"love"',),
).fetchall()
t2 = time.time()
print(f"python sqlite3: import {t1 - t0:.2f} s, search {1000 * (t2 - t1):.1f} ms ({len(hits)} hits)")
