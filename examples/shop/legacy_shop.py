#!/usr/bin/env python3
"""The legacy "shop" monolith of the example: users, catalog and orders behind one JSON HTTP API,
with its own SQLite database. Standard library only. Usage: legacy_shop.py PORT DB_PATH

Several instances may share one database (the example runs a second one for the shadow
comparison's noise learning). Its order history starts from history.json. Every answer carries a
fresh `request_id`: the kind of field that differs between two answers to the same request."""
import datetime
import json
import os
import re
import sqlite3
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, DB = int(sys.argv[1]), sys.argv[2]
HISTORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "history.json")
lock = threading.Lock()
db = sqlite3.connect(DB, check_same_thread=False, timeout=10)
db.executescript("""
CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS products (sku TEXT PRIMARY KEY, name TEXT NOT NULL, price_cents INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, items TEXT NOT NULL,
                                   total_cents INTEGER NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL);
INSERT OR IGNORE INTO products VALUES ('tea', 'Green tea', 450), ('mug', 'Mug', 1200), ('pot', 'Teapot', 3900);
""")
with open(HISTORY) as f:
    for o in json.load(f):
        # The monolith keeps times as "YYYY-MM-DD HH:MM:SS" (UTC).
        at = o["created_at"].replace("T", " ").rstrip("Z")
        db.execute("INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?, ?, ?)",
                   (o["id"], o["user_id"], json.dumps(o["items"]), o["total_cents"], o["status"], at))
db.commit()


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


class Shop(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server_version = "legacy-shop/1.0"

    def send_json(self, status, doc):
        if isinstance(doc, dict):
            doc["request_id"] = uuid.uuid4().hex
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-served-by", "legacy-shop")
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return None

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        with lock:
            if path == "/api/catalog":
                rows = db.execute("SELECT sku, name, price_cents FROM products").fetchall()
                return self.send_json(200, [{"sku": s, "name": n, "price_cents": p} for s, n, p in rows])
            if m := re.fullmatch(r"/api/users/(\d+)", path):
                row = db.execute("SELECT id, name, email FROM users WHERE id = ?", (m[1],)).fetchone()
                if not row:
                    return self.send_json(404, {"error": "no such user"})
                return self.send_json(200, {"id": row[0], "name": row[1], "email": row[2]})
            if path == "/api/orders":
                user = self.headers.get("x-user-id") or "anonymous"
                rows = db.execute("SELECT id, total_cents, status, created_at FROM orders WHERE user_id = ? "
                                  "ORDER BY created_at DESC, id DESC", (user,)).fetchall()
                return self.send_json(200, {"user_id": user, "served_by": "legacy-shop", "orders": [
                    {"id": i, "total_cents": t, "status": s, "created_at": c} for i, t, s, c in rows]})
            if m := re.fullmatch(r"/api/orders/(\d+)", path):
                row = db.execute("SELECT id, user_id, items, total_cents, status, created_at FROM orders WHERE id = ?",
                                 (m[1],)).fetchone()
                if not row:
                    return self.send_json(404, {"error": "no such order", "served_by": "legacy-shop"})
                return self.send_json(200, {"id": row[0], "user_id": row[1], "items": json.loads(row[2]),
                                            "total_cents": row[3], "status": row[4], "created_at": row[5],
                                            "served_by": "legacy-shop"})
        self.send_json(404, {"error": "not found"})

    def do_POST(self):
        path = self.path.split("?")[0]
        doc = self.body()
        if doc is None:
            return self.send_json(400, {"error": "body is not JSON"})
        with lock:
            if path == "/api/users":
                cur = db.execute("INSERT INTO users (name, email) VALUES (?, ?)", (doc.get("name", ""), doc.get("email", "")))
                db.commit()
                return self.send_json(201, {"id": cur.lastrowid, "name": doc.get("name"), "email": doc.get("email")})
            if path == "/api/orders":
                items = doc.get("items", [])
                prices = dict(db.execute("SELECT sku, price_cents FROM products").fetchall())
                total = sum(prices.get(i.get("sku"), 0) * int(i.get("qty", 1)) for i in items)
                user = self.headers.get("x-user-id") or str(doc.get("user_id", "anonymous"))
                cur = db.execute("INSERT INTO orders (user_id, items, total_cents, status, created_at) "
                                 "VALUES (?, ?, ?, 'placed', ?)", (user, json.dumps(items), total, now()))
                db.commit()
                return self.send_json(201, {"id": cur.lastrowid, "user_id": user, "total_cents": total,
                                            "status": "placed", "served_by": "legacy-shop"})
            if m := re.fullmatch(r"/api/orders/(\d+)/cancel", path):
                db.execute("UPDATE orders SET status = 'cancelled' WHERE id = ?", (m[1],))
                db.commit()
                return self.send_json(200, {"id": int(m[1]), "status": "cancelled", "served_by": "legacy-shop"})
        self.send_json(404, {"error": "not found"})


ThreadingHTTPServer(("127.0.0.1", PORT), Shop).serve_forever()
