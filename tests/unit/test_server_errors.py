"""Redis's error replies classified as refusals (kind, transient, advice), connection errors as down."""

from __future__ import annotations

import pytest
from redis._parsers import BaseParser
from redis.exceptions import ConnectionError, ReadOnlyError, RedisError, TimeoutError

from runner.broker.keys import QueueKeys
from runner.broker.server_errors import (
    RedisRefusedError,
    Refusal,
    RefusalKind,
    RefusalLog,
    WrongKey,
    classify,
    wrong_keys,
)

K = QueueKeys.of("storymimi")


def reply(text: str) -> RedisError:
    """The exception redis-py raises for the error reply `text` (its own mapping of codes to classes)."""
    error = BaseParser.parse_error(text)
    assert isinstance(error, RedisError)
    return error


@pytest.mark.parametrize(
    ("text", "kind", "transient"),
    [
        ("WRONGTYPE Operation against a key holding the wrong kind of value", "WRONGTYPE", False),
        (
            "WRONGTYPE Operation against a key holding the wrong kind of value script: on @user_script:1.",
            "WRONGTYPE",
            False,
        ),
        (
            "ERR Error running script (call to f_3c5d): @user_script:20: WRONGTYPE Operation against a key holding the "
            "wrong kind of value",
            "WRONGTYPE",
            False,
        ),
        ("OOM command not allowed when used memory > 'maxmemory'.", "OOM", False),
        ("OOM command not allowed when used memory > 'maxmemory'. script: on @user_script:1.", "OOM", False),
        ("READONLY You can't write against a read only replica.", "READONLY", True),
        ("NOSCRIPT No matching script. Please use EVAL.", "NOSCRIPT", False),
        (
            "MISCONF Valkey is configured to save RDB snapshots, but it's currently unable to persist to disk. "
            "Commands that may modify the data set are disabled.",
            "MISCONF",
            False,
        ),
        ("MISCONF Errors writing to the AOF file: No space left on device", "MISCONF", False),
        ("BUSY Valkey is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.", "BUSY", True),
        ("LOADING Valkey is loading the dataset in memory", "LOADING", True),
        ("NOPERM User app has no permissions to run the 'evalsha' command", "NOPERM", False),
        ("ERR unknown command 'FCALL', with args beginning with: ", "ERR", False),
        ("BUSYGROUP Consumer Group name already exists", "ERR", False),
        ("EXECABORT Transaction discarded because of previous errors.", "ERR", False),
    ],
)
def test_each_error_reply_is_a_refusal_of_its_kind(text: str, kind: str, transient: bool):
    refusal = classify(reply(text))
    assert refusal is not None
    assert (refusal.kind, refusal.transient) == (kind, transient)
    assert refusal.server_message.startswith(text.split(" ")[0]), "the server's words, with their code"
    assert refusal.describe().startswith(f"{kind} ") and refusal.advice in refusal.describe()


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
        TimeoutError("Timeout reading from socket"),
        reply("ERR max number of clients reached"),  # redis-py raises it as a ConnectionError
        ConnectionRefusedError(111, "Connection refused"),
        ValueError("not a Redis error"),
    ],
)
def test_a_lost_connection_or_timeout_is_down_not_a_refusal(error: Exception):
    assert classify(error) is None


def test_a_wrongtype_names_the_key_what_it_holds_and_what_to_do():
    refusal = Refusal(RefusalKind.WRONGTYPE, "WRONGTYPE ...", (WrongKey(K.jobs, "list", "zset"),))
    assert refusal.describe() == (
        "WRONGTYPE key runner:{storymimi}:queue holds a list, not the sorted set the runner keeps there: "
        "something else wrote to this key; move it away (RENAME) or use another QUEUE_NAME"
    )
    assert refusal.keys == [K.jobs]
    error = RedisRefusedError(refusal)
    assert classify(error) is refusal and "Redis said: WRONGTYPE" in str(error)


def test_only_runner_keys_of_another_type_are_wrong():
    """An absent key or one of the expected type is fine; a key the runner does not keep is not judged."""
    types = {K.jobs: "list", K.wake: "none", K.idle: "zset", K.inbox("w1"): "string", "storymimi": "list"}
    assert wrong_keys(types) == (WrongKey(K.jobs, "list", "zset"), WrongKey(K.inbox("w1"), "string", "list"))


def test_advice_says_what_to_do_for_each_kind():
    says = {
        "OOM": "maxmemory",
        "READONLY": "primary",
        "NOSCRIPT": "SCRIPT FLUSH",
        "MISCONF": "disk",
        "BUSY": "SCRIPT KILL",
        "LOADING": "wait",
        "NOPERM": "grant",
    }
    for kind, word in says.items():
        assert word in Refusal(RefusalKind(kind), kind).advice, kind
    assert classify(ReadOnlyError("You can't write against a read only replica.")) == Refusal(
        RefusalKind.READONLY, "READONLY You can't write against a read only replica."
    )


def test_a_refusal_is_logged_once_then_on_change_and_each_minute():
    now = [100.0]
    log = RefusalLog(every_s=60, clock=lambda: now[0])
    wrong = Refusal(RefusalKind.WRONGTYPE, "WRONGTYPE ...", (WrongKey(K.jobs, "list", "zset"),))
    assert log.due(wrong)
    now[0] += 5
    assert not log.due(wrong), "the same refusal again, within the minute"
    assert log.due(Refusal(RefusalKind.OOM, "OOM ...")), "another kind"
    assert log.due(wrong), "and back"
    now[0] += 61
    assert log.due(wrong), "a minute on, it is said again"
    assert log.clear() == pytest.approx(66)
    assert log.clear() is None
    assert log.due(wrong), "a new episode is logged at once"
