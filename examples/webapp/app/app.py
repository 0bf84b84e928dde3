"""Notes: a small web app on PostgreSQL, with only Python's standard library and psycopg2.

POST /notes   the request body (text) becomes a note; answers 201 with it as JSON
GET  /notes   every note as a JSON list, oldest first
GET  /healthz 200 when the database answers

The database is DATABASE_URL (libpq's URL or key=value form). At start the app waits for it
(up to DB_WAIT seconds, default 30) and creates its table when it is missing.
"""
import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2

DSN = os.environ.get("DATABASE_URL", "postgresql://postgres@db/postgres")
PORT = int(os.environ.get("PORT", "8000"))
MAX_BODY = 64 * 1024


def connect():
    return psycopg2.connect(DSN, connect_timeout=5)


def wait_for_database(seconds):
    deadline = time.monotonic() + seconds
    while True:
        try:
            return connect()
        except psycopg2.OperationalError as e:
            if time.monotonic() > deadline:
                raise
            print(f"notes: waiting for the database: {str(e).strip()}", flush=True)
            time.sleep(0.5)


def create_table():
    conn = wait_for_database(float(os.environ.get("DB_WAIT", "30")))
    with conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS notes ("
            " id serial PRIMARY KEY,"
            " body text NOT NULL,"
            " created timestamptz NOT NULL DEFAULT now())"
        )
    conn.close()


def note(row):
    return {"id": row[0], "body": row[1], "created": row[2].isoformat()}


class Handler(BaseHTTPRequestHandler):
    server_version = "notes/1"

    def send_json(self, status, value):
        data = (json.dumps(value) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def query(self, sql, args=()):
        conn = connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall()
        finally:
            conn.close()

    def do_GET(self):
        try:
            if self.path == "/notes":
                rows = self.query("SELECT id, body, created FROM notes ORDER BY id")
                self.send_json(200, [note(r) for r in rows])
            elif self.path == "/healthz":
                self.query("SELECT 1")
                self.send_json(200, {"status": "ok"})
            else:
                self.send_json(404, {"error": f"no such path: {self.path}"})
        except psycopg2.Error as e:
            self.send_json(503, {"error": str(e).strip()})

    def do_POST(self):
        if self.path != "/notes":
            self.send_json(404, {"error": f"no such path: {self.path}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            self.send_json(400, {"error": f"a note is 1 to {MAX_BODY} bytes of text"})
            return
        body = self.rfile.read(length).decode("utf-8", errors="replace").strip()
        try:
            rows = self.query("INSERT INTO notes (body) VALUES (%s) RETURNING id, body, created", (body,))
            self.send_json(201, note(rows[0]))
        except psycopg2.Error as e:
            self.send_json(503, {"error": str(e).strip()})

    def log_message(self, fmt, *args):
        print(f"{self.address_string()} {fmt % args}", flush=True)


def main():
    # As a container's first process, SIGTERM would otherwise be ignored.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    create_table()
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    print(f"notes: listening on port {PORT}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
