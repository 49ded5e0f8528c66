#!/usr/bin/env python3
"""The new "orders" microservice of the example: the orders part of the shop, carved out, with its
own SQLite database. Standard library only. Usage: orders_service.py PORT DB_PATH"""
import json
import re
import sqlite3
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, DB = int(sys.argv[1]), sys.argv[2]
PRICES = {"tea": 450, "mug": 1200, "pot": 3900}
lock = threading.Lock()
db = sqlite3.connect(DB, check_same_thread=False)
db.execute("""CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL,
              items TEXT NOT NULL, total_cents INTEGER NOT NULL, status TEXT NOT NULL)""")
db.commit()


class Orders(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server_version = "orders-service/0.1"

    def send_json(self, status, doc):
        doc["served_by"] = "orders-service"
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("x-served-by", "orders-service")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        m = re.fullmatch(r"/api/orders/(\d+)", self.path.split("?")[0])
        if not m:
            return self.send_json(404, {"error": "not found"})
        with lock:
            row = db.execute("SELECT id, user_id, items, total_cents, status FROM orders WHERE id = ?", (m[1],)).fetchone()
        if not row:
            return self.send_json(404, {"error": "no such order"})
        self.send_json(200, {"id": row[0], "user_id": row[1], "items": json.loads(row[2]),
                             "total_cents": row[3], "status": row[4]})

    def do_POST(self):
        if self.path.split("?")[0] != "/api/orders":
            return self.send_json(404, {"error": "not found"})
        n = int(self.headers.get("content-length") or 0)
        try:
            doc = json.loads(self.rfile.read(n) or b"{}")
        except ValueError:
            return self.send_json(400, {"error": "body is not JSON"})
        items = doc.get("items", [])
        total = sum(PRICES.get(i.get("sku"), 0) * int(i.get("qty", 1)) for i in items)
        user = self.headers.get("x-user-id") or str(doc.get("user_id", "anonymous"))
        with lock:
            # Ids from 1,000,000 up so they never collide with the monolith's while both take writes.
            cur = db.execute("INSERT INTO orders (id, user_id, items, total_cents, status) VALUES "
                             "((SELECT COALESCE(MAX(id), 999999) + 1 FROM orders), ?, ?, ?, 'placed')",
                             (user, json.dumps(items), total))
            db.commit()
        self.send_json(201, {"id": cur.lastrowid, "user_id": user, "total_cents": total, "status": "placed"})


ThreadingHTTPServer(("127.0.0.1", PORT), Orders).serve_forever()
