package etcdlock

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fencedlock/fencedlock/core"
)

// Subscribe implements core.Backend. The Client does not need it for etcd
// (AcquireWait queues in etcd), but it works: notify runs on every deletion
// in the lock's queue, and once more if the watch ends.
func (b *Backend) Subscribe(ctx context.Context, keys core.Keys, notify func()) (cancel func(), err error) {
	wctx, stop := context.WithCancel(clientv3.WithRequireLeader(b.ctx))
	wch := b.cli.Watch(wctx, queuePrefix(keys), clientv3.WithPrefix(), clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
	select {
	case wr, ok := <-wch:
		if !ok || wr.Err() != nil || !wr.Created {
			stop()
			err := errors.New("etcdlock: watch not created")
			if ok && wr.Err() != nil {
				err = wr.Err()
			}
			return nil, unavailable("subscribe", err)
		}
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
	done := make(chan struct{})
	if !b.goBackground(func() {
		defer close(done)
		for wr := range wch {
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					notify()
					break
				}
			}
			if wr.Err() != nil {
				notify() // notices may have been missed
			}
		}
		if wctx.Err() == nil {
			notify()
		}
	}) {
		stop()
		return nil, core.ErrClosed
	}
	return func() { stop(); <-done }, nil
}
