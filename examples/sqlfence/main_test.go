package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestRun plays the four stories and checks their outcomes (run fails on
// any other): on SQLite always, on PostgreSQL and MariaDB when reachable
// (required under FENCEDLOCK_REQUIRE_DB=1, as in CI).
func TestRun(t *testing.T) {
	for _, db := range []struct{ name, env, dsn string }{
		{"sqlite", "", ""},
		{"postgres", "FENCEDLOCK_PG_DSN", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"},
		{"mariadb", "FENCEDLOCK_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/test"},
	} {
		t.Run(db.name, func(t *testing.T) {
			dsn := db.dsn
			if v := os.Getenv(db.env); db.env != "" && v != "" {
				dsn = v
			}
			if dsn != "" && !reachable(dsn) {
				if os.Getenv("FENCEDLOCK_REQUIRE_DB") == "1" {
					t.Fatalf("%s unreachable", db.name)
				}
				t.Skipf("%s unreachable", db.name)
			}
			var out bytes.Buffer
			if err := run(&out, "", dsn, "", 100*time.Millisecond); err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			// Story 3 shows the read inside B's transaction seeing A's write.
			if !strings.Contains(out.String(), "reads 70 inside its transaction") {
				t.Fatalf("B's read inside its transaction did not see A's withdrawal:\n%s", out.String())
			}
		})
	}
}

func reachable(dsn string) bool {
	db, _, cleanup, err := open(dsn, "")
	if err != nil {
		return false
	}
	defer cleanup()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return db.PingContext(ctx) == nil
}
