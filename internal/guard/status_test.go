package guard_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
)

func TestClassify(t *testing.T) {
	contention := &core.ContentionError{RetryAfter: 2 * time.Second}
	for _, tc := range []struct {
		name string
		err  error
		want guard.Outcome
		ra   time.Duration
	}{
		{"nil", nil, guard.Acquired, 0},
		{"invalid key", fmt.Errorf("%w: empty", core.ErrInvalidKey), guard.InvalidKey, 0},
		{"contended", contention, guard.Contended, 2 * time.Second},
		{"deadline while waiting", fmt.Errorf("%w: %w", contention, context.DeadlineExceeded), guard.Timeout, 0},
		{"canceled while waiting", fmt.Errorf("%w: %w", contention, context.Canceled), guard.Canceled, 0},
		{"unavailable", core.Unavailable(errors.New("dial tcp: refused")), guard.Unavailable, 0},
		{"quorum", core.ErrQuorum, guard.Unavailable, 0},
		{"closed", core.ErrClosed, guard.Unavailable, 0},
		{"unknown", errors.New("??"), guard.Unavailable, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := guard.Classify(tc.err)
			if r.Outcome != tc.want || r.RetryAfter != tc.ra || r.Err != tc.err {
				t.Fatalf("Classify = %+v; want %v, RetryAfter %v", r, tc.want, tc.ra)
			}
		})
	}
}

type misconfigured struct{}

func (misconfigured) Error() string        { return "x: misconfigured" }
func (misconfigured) Is(target error) bool { return target == guard.ErrMisconfigured }

func TestClassifyKey(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want guard.Outcome
	}{
		{nil, guard.Acquired},
		{fmt.Errorf("%w: route has no {id}", misconfigured{}), guard.Misconfigured},
		{fmt.Errorf("%w: empty", core.ErrInvalidKey), guard.InvalidKey},
		{errors.New("bad body"), guard.InvalidKey},
		{context.DeadlineExceeded, guard.Timeout},
		{context.Canceled, guard.Canceled},
	} {
		if got := guard.ClassifyKey(tc.err).Outcome; got != tc.want {
			t.Errorf("ClassifyKey(%v) = %v; want %v", tc.err, got, tc.want)
		}
	}
}

func TestOutcome_HTTPStatusAndMessage(t *testing.T) {
	for _, tc := range []struct {
		o      guard.Outcome
		status int
		name   string
	}{
		{guard.Acquired, 200, "acquired"},
		{guard.FailedOpen, 200, "failed_open"},
		{guard.Contended, http.StatusConflict, "contended"},
		{guard.InvalidKey, http.StatusBadRequest, "invalid_key"},
		{guard.Unavailable, http.StatusServiceUnavailable, "unavailable"},
		{guard.Timeout, http.StatusGatewayTimeout, "timeout"},
		{guard.Canceled, guard.StatusClientClosedRequest, "canceled"},
		{guard.Lost, http.StatusConflict, "lost"},
		{guard.Misconfigured, http.StatusInternalServerError, "misconfigured"},
	} {
		if got := tc.o.HTTPStatus(); got != tc.status {
			t.Errorf("%v.HTTPStatus() = %d; want %d", tc.o, got, tc.status)
		}
		if got := tc.o.String(); got != tc.name {
			t.Errorf("String() = %q; want %q", got, tc.name)
		}
		if failed := tc.status != 200; failed != (tc.o.Message() != "") {
			t.Errorf("%v.Message() = %q", tc.o, tc.o.Message())
		}
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{
		0: 1, time.Nanosecond: 1, time.Second: 1, time.Second + time.Millisecond: 2,
		2500 * time.Millisecond: 3, 10 * time.Second: 10, -time.Second: 1,
	} {
		if got := guard.RetryAfterSeconds(d); got != want {
			t.Errorf("RetryAfterSeconds(%v) = %d; want %d", d, got, want)
		}
	}
}

func TestPolicy_Validate(t *testing.T) {
	for _, tc := range []struct {
		p  guard.Policy
		ok bool
	}{
		{guard.Policy{}, true},
		{guard.Policy{TTL: time.Second, AutoRefresh: true, RefreshEvery: 100 * time.Millisecond}, true},
		{guard.Policy{AutoRefresh: true, RefreshEvery: time.Hour}, true}, // TTL from the Locker: unknown here
		{guard.Policy{TTL: time.Second, AutoRefresh: true, RefreshEvery: time.Second}, false},
		{guard.Policy{TTL: -1}, false},
		{guard.Policy{Wait: -1}, false},
		{guard.Policy{MaxHold: -1}, false},
		{guard.Policy{ReleaseTimeout: -1}, false},
	} {
		if err := tc.p.Validate(); (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v; want ok=%v", tc.p, err, tc.ok)
		}
	}
}
