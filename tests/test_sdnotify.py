"""sd_notify against real AF_UNIX datagram sockets: a path in tmp_path and an abstract one."""

from __future__ import annotations

import os
import socket
import time

import pytest

from slurm_bridge import sdnotify


@pytest.fixture
def path_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


@pytest.fixture
def abstract_socket(monkeypatch):
    name = f"slurm-bridge-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def test_ready_and_status_arrive_as_one_datagram_in_order(path_socket):
    assert sdnotify.notify(READY=1, STATUS="watching gpu") is True
    assert path_socket.recv(4096) == b"READY=1\nSTATUS=watching gpu"


@pytest.mark.parametrize("fields, expected", [
    ({"WATCHDOG": 1}, b"WATCHDOG=1"),
    ({"STOPPING": 1}, b"STOPPING=1"),
    ({"RELOADING": 1}, b"RELOADING=1"),
    ({"ready": True}, b"READY=1"),
    ({"STATUS": "3 pending, 1 burst", "ERRNO": 0}, b"STATUS=3 pending, 1 burst\nERRNO=0"),
    ({"STATUS": "naïve"}, "STATUS=naïve".encode()),
])
def test_each_field_is_sent_verbatim(path_socket, fields, expected):
    assert sdnotify.notify(**fields) is True
    assert path_socket.recv(4096) == expected


def test_every_call_is_its_own_datagram(path_socket):
    assert sdnotify.notify(WATCHDOG=1)
    assert sdnotify.notify(STOPPING=1)
    assert path_socket.recv(4096) == b"WATCHDOG=1"
    assert path_socket.recv(4096) == b"STOPPING=1"


def test_abstract_socket(abstract_socket):
    assert sdnotify.notify(READY=1, STATUS="up") is True
    assert abstract_socket.recv(4096) == b"READY=1\nSTATUS=up"


def test_reloading_carries_the_monotonic_clock(path_socket):
    before = time.monotonic_ns() // 1000
    assert sdnotify.reloading(status="reloading config") is True
    after = time.monotonic_ns() // 1000
    lines = path_socket.recv(4096).split(b"\n")
    assert lines[0] == b"RELOADING=1"
    key, _, usec = lines[1].partition(b"=")
    assert key == b"MONOTONIC_USEC" and before <= int(usec) <= after
    assert lines[2:] == [b"STATUS=reloading config"]


def test_unset_socket_is_a_quiet_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify(READY=1) is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.notify(READY=1) is False


def test_unusable_socket_returns_false_without_raising(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert sdnotify.notify(READY=1) is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")   # not supported here
    assert sdnotify.notify(READY=1) is False


@pytest.mark.parametrize("fields", [
    {},
    {"STATUS": "two\nlines"},
    {"READY": None},
    {"bad-key": 1},
])
def test_malformed_fields_are_a_caller_bug(path_socket, fields):
    with pytest.raises(ValueError):
        sdnotify.notify(**fields)


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"WATCHDOG_USEC": "60000000"}, 30.0),
    ({"WATCHDOG_USEC": "1500000"}, 0.75),
    ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "{pid}"}, 30.0),
    ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "{other}"}, None),
    ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "x"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": ""}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch, env, expected):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(pid=os.getpid(), other=os.getpid() + 1))
    assert sdnotify.watchdog_interval() == expected
