package etcdlock_test

import (
	"context"
	"log"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/etcdlock"
)

// Switching a service from Redis to etcd changes the constructor only: the
// *core.Client goes to the same adapters, sqlguard and otel as before.
// (Compile-only: it needs a running etcd.)
func Example() {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"10.0.0.1:2379", "10.0.0.2:2379", "10.0.0.3:2379"},
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()

	locker, err := etcdlock.New(cli, core.WithTTL(5*time.Second))
	if err != nil {
		log.Fatal(err) // wraps core.ErrUnavailable when etcd cannot be reached
	}
	defer locker.Close() // revokes the session lease: every lock and waiter goes

	ctx := context.Background()
	l, err := locker.Acquire(ctx, "settlement:42", core.WithWait(2*time.Second), core.WithAutoRefresh())
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = l.Release(rctx)
	}()

	work, cancel := l.Context(ctx) // cancelled if the lock is lost
	defer cancel()
	_ = work
	log.Printf("fence %d: etcd revision, never compare it with a Redis fence", l.Fence())
}

// A longer session lease allows longer lock TTLs, at the price of locks of a
// crashed process lingering that long.
func ExampleNewBackend() {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:2379"}})
	if err != nil {
		log.Fatal(err)
	}
	defer cli.Close()
	b, err := etcdlock.NewBackend(cli, etcdlock.WithSessionTTL(time.Minute))
	if err != nil {
		log.Fatal(err)
	}
	locker := etcdlock.NewClient(b, core.WithTTL(45*time.Second))
	defer locker.Close()
}
