#!/usr/bin/env python3
"""The new "orders" microservice of the example: the orders part of the shop, carved out, with its
own SQLite database. Standard library only. Usage: orders_service.py PORT DB_PATH

The monolith's order history (history.json) was imported into it before the switch; since then
the projector (consumers/, a strangler-consumer of the shop-orders stream) writes every order the
shop takes, on either side, and every cancellation into the same table: the service answers
`GET /api/orders/{id}` and `GET /api/orders` (the caller's orders) from that read model. It answers
like the monolith except in the ways a shadow comparison is there to find: times in ISO 8601
("2026-11-02T09:07:00Z", the monolith says "2026-11-02 09:07:00"), an extra `currency` field, and
a pricing bug: a teapot line counts one teapot whatever its quantity, so some totals are wrong.

A "bad deploy" can be switched on while it runs: `curl -X POST localhost:8082/_control/bad-deploy`
makes every /api answer a 500 (DELETE switches it off); the rollout rolls back on its own."""
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
PRICES = {"tea": 450, "mug": 1200, "pot": 3900}
lock = threading.Lock()
bad_deploy = threading.Event()
db = sqlite3.connect(DB, check_same_thread=False, timeout=10)
# WAL: the projector (consumers/) writes the orders it reads from shop-orders into this table
# while the service reads and writes it.
db.execute("PRAGMA journal_mode=WAL")
db.execute("""CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL,
              items TEXT NOT NULL, total_cents INTEGER NOT NULL, status TEXT NOT NULL,
              created_at TEXT NOT NULL)""")


def total(items):
    # The bug: `pot` lines ignore their quantity.
    return sum(PRICES.get(i.get("sku"), 0) * (1 if i.get("sku") == "pot" else int(i.get("qty", 1)))
               for i in items)


with open(HISTORY) as f:
    for o in json.load(f):
        db.execute("INSERT OR IGNORE INTO orders VALUES (?, ?, ?, ?, ?, ?)",
                   (o["id"], o["user_id"], json.dumps(o["items"]), total(o["items"]), o["status"], o["created_at"]))
db.commit()


class Orders(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server_version = "orders-service/0.1"

    def send_json(self, status, doc):
        doc["served_by"] = "orders-service"
        doc["request_id"] = uuid.uuid4().hex
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-served-by", "orders-service")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass

    def control(self):
        """`/_control/bad-deploy`: POST turns every /api answer into a 500, DELETE undoes it."""
        if self.path.split("?")[0] != "/_control/bad-deploy":
            return False
        (bad_deploy.set if self.command == "POST" else bad_deploy.clear)()
        self.send_json(200, {"bad_deploy": bad_deploy.is_set()})
        return True

    def failing(self):
        if bad_deploy.is_set():
            self.send_json(500, {"error": "internal error (bad deploy)"})
            return True
        return False

    def do_DELETE(self):
        if not self.control():
            self.send_json(404, {"error": "not found"})

    def do_GET(self):
        if self.failing():
            return
        if self.path.split("?")[0] == "/api/orders":
            return self.list_orders()
        m = re.fullmatch(r"/api/orders/(\d+)", self.path.split("?")[0])
        if not m:
            return self.send_json(404, {"error": "not found"})
        with lock:
            row = db.execute("SELECT id, user_id, items, total_cents, status, created_at FROM orders WHERE id = ?",
                             (m[1],)).fetchone()
        if not row:
            return self.send_json(404, {"error": "no such order"})
        self.send_json(200, {"id": row[0], "user_id": row[1], "items": json.loads(row[2]),
                             "total_cents": row[3], "currency": "EUR", "status": row[4], "created_at": row[5]})

    def list_orders(self):
        """The caller's orders (x-user-id), newest first."""
        user = self.headers.get("x-user-id") or "anonymous"
        with lock:
            rows = db.execute("SELECT id, total_cents, status, created_at FROM orders WHERE user_id = ? "
                              "ORDER BY created_at DESC, id DESC", (user,)).fetchall()
        self.send_json(200, {"user_id": user, "orders": [
            {"id": i, "total_cents": t, "currency": "EUR", "status": s, "created_at": c} for i, t, s, c in rows]})

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        if self.control() or self.failing():
            return
        if m := re.fullmatch(r"/api/orders/(\d+)/cancel", self.path.split("?")[0]):
            self.rfile.read(n)
            with lock:
                cur = db.execute("UPDATE orders SET status = 'cancelled' WHERE id = ?", (m[1],))
                db.commit()
            if cur.rowcount == 0:
                return self.send_json(404, {"error": "no such order"})
            return self.send_json(200, {"id": int(m[1]), "status": "cancelled"})
        if self.path.split("?")[0] != "/api/orders":
            return self.send_json(404, {"error": "not found"})
        try:
            doc = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            return self.send_json(400, {"error": "body is not JSON"})
        items = doc.get("items", [])
        cents = total(items)
        user = self.headers.get("x-user-id") or str(doc.get("user_id", "anonymous"))
        with lock:
            # Ids from 1,000,000 up so they never collide with the monolith's while both take writes.
            at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            cur = db.execute("INSERT INTO orders (id, user_id, items, total_cents, status, created_at) VALUES "
                             "((SELECT MAX(COALESCE(MAX(id), 0) + 1, 1000000) FROM orders), ?, ?, ?, 'placed', ?)",
                             (user, json.dumps(items), cents, at))
            db.commit()
        self.send_json(201, {"id": cur.lastrowid, "user_id": user, "total_cents": cents, "status": "placed"})


ThreadingHTTPServer(("127.0.0.1", PORT), Orders).serve_forever()
