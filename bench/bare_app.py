"""The reference for bench_gateway.py: a Flask app that only parses the JSON body."""

import json

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/webhook")
def webhook():
    data = json.loads(request.get_data())
    return jsonify({"ok": True, "keys": len(data)})


@app.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})
