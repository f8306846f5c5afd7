package main

const usage = `fencedlock inspects and repairs the locks of fencedlock clients.

Usage:
  fencedlock [global flags] COMMAND [flags] [ARGS]

Commands:
  ls [-json] [PATTERN]         held locks under the prefix, one row each;
                               PATTERN is a glob on the caller's key
  show [-json] KEY             one lock: holder, lease, waiters, backend key,
                               fence counter, and each shared/permit holder
  release --force [-yes] KEY   remove the hold, notify waiters and raise the
                               fence counter so the evicted holder's fenced
                               writes are refused; asks unless -yes
  watch [-interval D] [-top N] [-n N] [PATTERN]
                               live view of the hottest keys (waiters,
                               grants per second), until Ctrl-C
  bench [-workers N] [-duration D] [-hold D] [-csv FILE]
                               contention benchmark against this Redis:
                               fencedlock against a 1 ms polling lock

Global flags (also accepted after the command):
  -redis ADDR     host:port, a redis:// or rediss:// URL, or a comma-separated
                  list (a Cluster, or Sentinels with -master); a single
                  Cluster node's address is enough: the other masters are
                  found from it
  -master NAME    Sentinel master name: -redis lists the sentinels
  -etcd ENDPOINTS inspect etcdlock locks on etcd instead (host:port, comma-
                  separated); ls, show, release and watch work there: the
                  fence is the holder's create revision, waiters are the
                  queued entries, ttl_ms is the lock's TTL (not time left)
  -prefix P       key prefix (default "lock:", the same as core's)
  -timeout D      per-command timeout (default 3s)

Columns: key (the caller's key, unescaped; "#<hash>" for keys longer than
128 bytes, which are stored hashed), owner (Lock.Owner: a hash of the token,
never the token), ttl_ms, fence (the holder's fence; -json adds
fence_counter, the highest fence granted), waiters (connections subscribed to the key's release channel: one
per waiting client process).

Exit status: 0 done, 1 bad input or no such lock, 2 backend unreachable.
`
