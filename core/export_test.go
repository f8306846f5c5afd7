package core

// Test-only access to internals of the topology backends.

// RedlockWithoutRaise turns off the raising of lagging fence counters: the
// negative control for the cross-node fence test.
func RedlockWithoutRaise() Option {
	return &optionSpec{name: "RedlockWithoutRaise", scope: scopeRedlock, apply: func(c *config) { c.redlock.noRaise = true }}
}

// WithLocalQueue turns the local queue off for comparisons.
func WithLocalQueue(on bool) Option { return withLocalQueue(on) }

// ShardOf returns the index of the shard, among shards with these names,
// that holds key under the default prefix.
func ShardOf(names []string, key string) int {
	seeds := make([]uint64, len(names))
	for i, n := range names {
		seeds[i] = fnv64(n)
	}
	return rendezvous(seeds, KeysFor(DefaultPrefix, key).Tag)
}

// GrantFromArrival counts a store-queue grant's validity from the arrival
// of its notice instead of the waiter's last refused attempt: the unsafe
// rule, for the negative control of the paused-grantee test.
func GrantFromArrival() Option {
	return callOption("GrantFromArrival", func(c *config) { c.grantFromArrival = true })
}

// AcceptLateGrants turns off the check that refuses a grant whose reply
// came back after its lease ran out: the negative control of the
// late-grant test.
func AcceptLateGrants() Option {
	return callOption("AcceptLateGrants", func(c *config) { c.acceptLateGrants = true })
}
