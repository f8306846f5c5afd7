// Command grpcserver runs a gRPC server and its clients in one program to
// show grpcmw at work: concurrent Pay calls for the same order are
// serialized by a distributed lock on "order:{order_id}"; the ones that
// find the order locked end Aborted with a RetryInfo detail (the holder's
// remaining lease; the TTL when another call of this same server is still
// acquiring it), wait that long, retry, and find the order paid.
//
//	go run ./examples/grpcserver                        # embedded Redis (miniredis)
//	go run ./examples/grpcserver -redis 127.0.0.1:6379  # a real one
//	go run ./examples/grpcserver -listen 127.0.0.1:9090 # serve until Ctrl-C
//
// With -listen it serves Orders with gRPC server reflection instead of
// running its own clients, so grpcurl and ghz need no .proto file:
//
//	grpcurl -plaintext 127.0.0.1:9090 list
//	grpcurl -plaintext -d '{"order_id":"42","amount_cents":1999}' 127.0.0.1:9090 fencedlock.example.orders.Orders/Pay
//	ghz --insecure -c 50 -n 2000 --call fencedlock.example.orders.Orders/Pay -d '{"order_id":"42"}' 127.0.0.1:9090
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/examples/grpcserver/orderpb"
	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/otel/oteldemo"
)

func main() {
	redisAddr := flag.String("redis", "", "Redis address (default: an embedded miniredis)")
	payers := flag.Int("payers", 4, "concurrent Pay calls for the same order")
	otelMode := flag.String("otel", "off", "telemetry: off, or stdout to print spans and metrics")
	listen := flag.String("listen", "", "serve on this address (with reflection) until interrupted, instead of running clients")
	flag.Parse()
	tel, err := oteldemo.Setup(*otelMode, os.Stdout)
	if err != nil {
		log.Fatal(err)
	}
	log.SetFlags(0)
	err = run(*redisAddr, *listen, *payers, tel.Observer())
	tel.Shutdown(context.Background()) // prints the metrics at exit
	if err != nil {
		log.Fatal(err)
	}
}

func run(redisAddr, listen string, payers int, obs core.Observer) error {
	rdb, where, closeRedis, err := openRedis(redisAddr)
	if err != nil {
		return err
	}
	defer closeRedis()
	locker := core.New(rdb, core.WithObserver(obs))
	defer locker.Close()
	db := &ledger{paid: map[string]int{}}
	srv := newServer(locker, db)
	if listen != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return serve(ctx, listen, srv)
	}
	return demo(srv, db, payers, where)
}

// openRedis connects to addr, or to an embedded miniredis when addr is
// empty, with the fail-fast settings of docs/operators.md (Unavailable in
// milliseconds with Redis down, not after go-redis's retries).
func openRedis(addr string) (*redis.Client, string, func(), error) {
	where, stopMini := "real Redis at "+addr, func() {}
	if addr == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return nil, "", nil, err
		}
		addr, where, stopMini = mr.Addr(), "embedded Redis (miniredis)", mr.Close
	}
	rdb := redis.NewClient(&redis.Options{
		Addr: addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: 250 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond,
	})
	closeAll := func() { rdb.Close(); stopMini() }
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		closeAll()
		return nil, "", nil, fmt.Errorf("redis at %s: %w", addr, err)
	}
	return rdb, where, closeAll, nil
}

// newServer is the Orders server with Pay locked per order. The
// interceptor fails fast (no WithWait), so contended calls end Aborted at
// once.
func newServer(locker *core.Client, db *ledger) *grpc.Server {
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(
		grpcmw.UnaryServerInterceptor(locker, grpcmw.Template("order:{order_id}"),
			grpcmw.WithMethods(orderpb.Orders_Pay_FullMethodName),
			grpcmw.WithTTL(time.Second), grpcmw.WithAutoRefresh()),
	))
	orderpb.RegisterOrdersServer(srv, &orders{db: db})
	return srv
}

// demo serves srv on a random loopback port and runs the payers against
// it; it fails when an order was not charged exactly once.
func demo(srv *grpc.Server, db *ledger, payers int, where string) error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		srv.GracefulStop()
		<-served
	}()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	fmt.Printf("Orders.Pay locked on \"order:{order_id}\" with %s, server on %s\n", where, lis.Addr())
	fmt.Printf("%d concurrent payers for order 42, one for order 43:\n", payers)
	payAll(orderpb.NewOrdersClient(cc), payers)
	fmt.Printf("ledger: order 42 charged %d time(s), order 43 charged %d time(s)\n", db.charges("42"), db.charges("43"))
	if db.charges("42") != 1 || db.charges("43") != 1 {
		return errors.New("an order was charged more or less than once")
	}
	return nil
}

// payAll runs payers concurrent payers for order 42 and one for order 43.
func payAll(client orderpb.OrdersClient, payers int) {
	var wg sync.WaitGroup
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Printf(format, args...)
	}
	for i := range payers + 1 {
		order, who := "42", fmt.Sprintf("payer %d", i+1)
		if i == payers {
			order, who = "43", "payer 43"
		}
		wg.Go(func() { pay(client, order, who, say) })
	}
	wg.Wait()
}

// pay calls Pay until it is not refused, waiting the RetryInfo delay
// between attempts, as a well-behaved client does.
func pay(client orderpb.OrdersClient, order, who string, say func(string, ...any)) {
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		r, err := client.Pay(ctx, &orderpb.PayRequest{OrderId: order, AmountCents: 1999})
		cancel()
		switch {
		case err == nil && r.GetCharged():
			say("  %s, order %s: OK, charged under fence %d\n", who, order, r.GetFence())
			return
		case err == nil:
			say("  %s, order %s: OK, already paid (fence %d)\n", who, order, r.GetFence())
			return
		case status.Code(err) == codes.Aborted && attempt < 10:
			delay, ok := grpcmw.RetryDelay(err)
			if !ok {
				delay = 100 * time.Millisecond
			}
			say("  %s, order %s: %s %q, RetryInfo says retry in %v\n",
				who, order, status.Code(err), status.Convert(err).Message(), delay.Round(time.Millisecond))
			time.Sleep(delay)
		default:
			say("  %s, order %s: failed: %v\n", who, order, err)
			return
		}
	}
}

// orders is the service. Pay checks the ledger, "talks to the payment
// provider" for a while, then records the charge: a check-then-act that
// would charge twice if two calls for one order overlapped.
type orders struct {
	orderpb.UnimplementedOrdersServer
	db *ledger
}

func (o *orders) Pay(ctx context.Context, req *orderpb.PayRequest) (*orderpb.PayReply, error) {
	lock, ok := core.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "Pay must run under the order lock")
	}
	reply := &orderpb.PayReply{Fence: lock.Fence()}
	if o.db.charges(req.GetOrderId()) > 0 {
		return reply, nil
	}
	select {
	case <-time.After(300 * time.Millisecond): // the payment provider
	case <-ctx.Done(): // the caller left, or the lock was lost (the call then ends Aborted)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	o.db.charge(req.GetOrderId())
	reply.Charged = true
	return reply, nil
}

// ledger stands in for the database.
type ledger struct {
	mu   sync.Mutex
	paid map[string]int
}

func (l *ledger) charges(order string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.paid[order]
}

func (l *ledger) charge(order string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.paid[order]++
}
