"""A comparison peer for chatroom's benchmark: the replaced Flask-SocketIO service.

Its handlers are those of the guide that deployed the replaced service, unchanged in behaviour: threading
mode, Redis as the message queue between nodes, the username in the Redis hash
`session:{sid}` (read on every line). Two differences, both in the peer's favour: the
debug loggers the guide turns on (logger, engineio_logger) are off, and the per-event
prints go to a log file rather than a terminal. Run several nodes on one Redis:

    PORT=5001 REDIS_URL=redis://127.0.0.1:6379/0 python app.py
"""

import os

import redis
from flask import Flask, request
from flask_cors import CORS
from flask_socketio import SocketIO, emit

PORT = int(os.environ.get("PORT", "5000"))
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

app = Flask(__name__)
app.config["SECRET_KEY"] = "benchmark-peer"
CORS(app)

redis_client = redis.StrictRedis.from_url(REDIS_URL)
socketio = SocketIO(
    app,
    async_mode="threading",
    message_queue=REDIS_URL,
    manage_session=True,
    cors_allowed_origins="*",
)

SESSION_PREFIX = "session:"


def set_session_data(session_id, key, value):
    redis_client.hset(f"{SESSION_PREFIX}{session_id}", key, value)


def get_session_data(session_id, key):
    return redis_client.hget(f"{SESSION_PREFIX}{session_id}", key)


def delete_session_data(session_id):
    redis_client.delete(f"{SESSION_PREFIX}{session_id}")


@app.route("/")
def index():
    return "chat peer (the replaced Flask-SocketIO service)\n"


@socketio.on("connect")
def handle_connect():
    try:
        session_id = request.sid
        print(f"Session {session_id} connected.")
        emit("message", "Welcome to the chatroom!")
        set_session_data(session_id, "username", "")
    except Exception as e:
        print(f"Error during connection: {str(e)}")


@socketio.on("disconnect")
def handle_disconnect():
    try:
        session_id = request.sid
        username = get_session_data(session_id, "username")
        if username:
            username = username.decode()
            leave_message = f"{username} left the chatroom."
            emit("message", leave_message, broadcast=True)
            print(leave_message)
        delete_session_data(session_id)
        print(f"Session {session_id} disconnected.")
    except Exception as e:
        print(f"Error during disconnection: {str(e)}")


@socketio.on("set_username")
def handle_set_username(username):
    session_id = request.sid
    set_session_data(session_id, "username", username)
    print(f"Set the username of the client {session_id} to {username}")
    emit("message", f"Your username is set to {username}")


@socketio.on("message")
def handle_message(msg):
    session_id = request.sid
    username = get_session_data(session_id, "username")
    if username:
        username = username.decode()
        formatted_message = f"{username}: {msg}"
        emit("message", formatted_message, broadcast=True)
        print(formatted_message)
    else:
        warning_message = "Failed to send the message. Specify a username first."
        emit("message", warning_message)
        print(warning_message)


if __name__ == "__main__":
    # As deployed: Werkzeug's threaded server, one thread per connection. It refuses to
    # start without a terminal unless told it may.
    socketio.run(app, host="127.0.0.1", port=PORT, allow_unsafe_werkzeug=True)
