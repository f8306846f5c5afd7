package ginmw_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/fencedlock/fencedlock/ginmw"
	"github.com/fencedlock/fencedlock/idempotency"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// idemClient has its own pool; TestIdempotent closes it.
var idemClient = &http.Client{Transport: &http.Transport{}}

type idemReply struct {
	status   int
	body     string
	replayed bool
}

func postKey(t *testing.T, url, key, body string) idemReply {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), "POST", url, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := idemClient.Do(req)
	if err != nil {
		t.Error(err)
		return idemReply{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return idemReply{resp.StatusCode, string(b), resp.Header.Get(idempotency.ReplayedHeader) == "true"}
}

// idemServers starts two instances (two lock clients) of a gin charge
// route behind Idempotent on one store; runs counts handler runs.
func idemServers(t *testing.T) (servers []string, runs *atomic.Int64) {
	srv := redistest.Start(t)
	fx := &fixture{t: t, srv: srv, rdb: srv.Client(t)}
	store := idempotency.NewRedisStore(fx.rdb, "")
	runs = new(atomic.Int64)
	charge := func(c *gin.Context) {
		body, _ := io.ReadAll(c.Request.Body)
		n := runs.Add(1)
		time.Sleep(50 * time.Millisecond)
		if string(body) == "panic" {
			panic("charge failed")
		}
		c.JSON(http.StatusCreated, gin.H{"charge": n, "order": c.Param("id"), "amount": string(body)})
	}
	for range 2 {
		e := newEngine()
		e.POST("/orders/:id/charge", ginmw.Idempotent(fx.client(), store), charge)
		servers = append(servers, serve(t, e).URL)
	}
	return servers, runs
}

func TestIdempotent(t *testing.T) {
	servers, runs := idemServers(t)
	t.Cleanup(idemClient.CloseIdleConnections)

	// 8 concurrent duplicates over both instances: one run, one answer.
	replies := make([]idemReply, 8)
	var wg sync.WaitGroup
	for i := range replies {
		wg.Go(func() { replies[i] = postKey(t, servers[i%2]+"/orders/7/charge", "g1", "5.00") })
	}
	wg.Wait()
	replayed := 0
	for _, r := range replies {
		if r.status != http.StatusCreated || r.body != replies[0].body {
			t.Fatalf("replies differ: %+v", replies)
		}
		if r.replayed {
			replayed++
		}
	}
	if runs.Load() != 1 || replayed != 7 {
		t.Fatalf("runs = %d, replayed = %d; want 1 and 7", runs.Load(), replayed)
	}

	cases := []struct {
		name, path, key, body string
		want                  int
	}{
		{"other order, same key", "/orders/8/charge", "g1", "5.00", http.StatusUnprocessableEntity}, // same route template, other path
		{"other body", "/orders/7/charge", "g1", "6.00", http.StatusUnprocessableEntity},
		{"missing key", "/orders/7/charge", "", "5.00", http.StatusBadRequest},
		{"panic", "/orders/7/charge", "g2", "panic", http.StatusInternalServerError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if r := postKey(t, servers[0]+c.path, c.key, c.body); r.status != c.want {
				t.Fatalf("%s: %d %q, want %d", c.name, r.status, r.body, c.want)
			}
		})
	}
	before := runs.Load()
	if r := postKey(t, servers[1]+"/orders/7/charge", "g2", "panic"); r.status != http.StatusInternalServerError || runs.Load() != before+1 {
		t.Fatalf("retry after a panic: %+v, runs %d -> %d; want a second run", r, before, runs.Load())
	}
	if got := fmt.Sprint(runs.Load()); got != "3" {
		t.Fatalf("runs = %s, want 3", got)
	}
}
