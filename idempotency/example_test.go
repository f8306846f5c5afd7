package idempotency_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/httpmw"
	"github.com/fencedlock/fencedlock/idempotency"
)

func Example() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	locker := core.New(rdb)
	defer locker.Close()

	charges := 0
	charge := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		charges++
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "charge %d", charges)
	})
	store := idempotency.NewRedisStore(rdb, "")
	mux := http.NewServeMux()
	mux.Handle("POST /charges", httpmw.Idempotent(locker, store)(charge))

	for _, body := range []string{"9.99", "9.99", "5.00"} {
		req := httptest.NewRequest("POST", "/charges", strings.NewReader(body))
		req.Header.Set("Idempotency-Key", `"8e03978e-40d5-43e8-bc93-6894a57f9324"`)
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, req)
		fmt.Printf("%d %q replayed=%t\n", w.Code, strings.TrimSpace(w.Body.String()), w.Header().Get("Idempotent-Replayed") == "true")
	}
	fmt.Println("charges:", charges)
	// Output:
	// 201 "charge 1" replayed=false
	// 201 "charge 1" replayed=true
	// 422 "Idempotency-Key already used for a different request" replayed=false
	// charges: 1
}
