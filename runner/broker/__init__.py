"""Redis: the queue, its keys and Lua scripts, enqueue, and the slots shared across processes.

keys.py     every Redis key and prefix the runner uses, one queue's under one hash tag
lua/        one .lua file per script; lua.py loads them and runs many in one round trip
enqueue.py  putting jobs on a queue (group-committed, hand-off to an idle worker)
queue.py    one worker's queue operations: claim, renew, finish, release, wait for work
slots.py    slots of named limits shared by every process (provider concurrency, calls a minute)
sentinel.py the master that Redis Sentinel names (REDIS_SENTINELS), a failover seen as a lost connection
"""
