package guard_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
)

func TestClassify_modeErrorsAreMisconfigured(t *testing.T) {
	for _, err := range []error{
		&core.ModeError{Want: "p3", Have: "p2"},
		fmt.Errorf("wrapped: %w", core.ErrModeUnsupported),
		&core.KeyError{Key: "k", Err: &core.ModeError{Want: "s", Have: "p2"}},
	} {
		res := guard.Classify(err)
		if res.Outcome != guard.Misconfigured || res.Outcome.HTTPStatus() != http.StatusInternalServerError {
			t.Errorf("Classify(%v) = %v (%d); want misconfigured, 500", err, res.Outcome, res.Outcome.HTTPStatus())
		}
		if !guard.IsModeError(err) {
			t.Errorf("IsModeError(%v) = false", err)
		}
	}
	if guard.IsModeError(core.ErrNotAcquired) {
		t.Error("IsModeError(ErrNotAcquired) = true")
	}
}

func TestLimited_status(t *testing.T) {
	if s := guard.Limited.HTTPStatus(); s != http.StatusTooManyRequests {
		t.Fatalf("Limited = %d; want 429", s)
	}
	if guard.Limited.String() != "limited" || guard.Limited.Message() == "" {
		t.Fatalf("Limited: %q %q", guard.Limited.String(), guard.Limited.Message())
	}
}
