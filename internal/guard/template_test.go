package guard_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
)

func TestParseTemplate(t *testing.T) {
	for _, tc := range []struct {
		tmpl  string
		names []string
		ok    bool
	}{
		{"coupon:{id}", []string{"id"}, true},
		{"{id}", []string{"id"}, true},
		{"transfer:{from}:{to}", []string{"from", "to"}, true},
		{"static", nil, true},
		{"", nil, false},
		{"a{", nil, false},
		{"a}", nil, false},
		{"{}", nil, false},
		{"{a{b}}", nil, false},
		{"{a b}", nil, false},
		{"{a/b}", nil, false},
	} {
		tp, err := guard.ParseTemplate(tc.tmpl)
		if (err == nil) != tc.ok || strings.Join(tp.Names(), ",") != strings.Join(tc.names, ",") {
			t.Errorf("ParseTemplate(%q) = %v, %v; want %v ok=%v", tc.tmpl, tp.Names(), err, tc.names, tc.ok)
		}
	}
}

func TestTemplate_Expand(t *testing.T) {
	errMissing := errors.New("missing")
	get := func(vals map[string]string) func(string) (string, error) {
		return func(n string) (string, error) {
			v, ok := vals[n]
			if !ok {
				return "", errMissing
			}
			return v, nil
		}
	}
	two, _ := guard.ParseTemplate("t:{from}->{to}")
	one, _ := guard.ParseTemplate("{id}")
	for _, tc := range []struct {
		name string
		t    guard.Template
		vals map[string]string
		want string
		err  error
	}{
		{"two", two, map[string]string{"from": "a", "to": "b"}, "t:a->b", nil},
		{"missing", two, map[string]string{"from": "a"}, "", errMissing},
		{"empty value", two, map[string]string{"from": "", "to": "b"}, "", core.ErrInvalidKey},
		{"control char", two, map[string]string{"from": "\n", "to": "b"}, "", core.ErrInvalidKey},
		{"single", one, map[string]string{"id": "42"}, "42", nil},
		{"single empty", one, map[string]string{"id": ""}, "", core.ErrInvalidKey},
		{"too long", one, map[string]string{"id": strings.Repeat("x", core.MaxKeyLen+1)}, "", core.ErrInvalidKey},
	} {
		got, err := tc.t.Expand(get(tc.vals))
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
			t.Errorf("%s: Expand = %q, %v; want %q, %v", tc.name, got, err, tc.want, tc.err)
		}
	}
}
