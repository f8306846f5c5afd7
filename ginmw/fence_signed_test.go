package ginmw_test

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/fencesign"
	"github.com/fencedlock/fencedlock/ginmw"
)

func TestAcceptSignedFence(t *testing.T) {
	key := fencesign.Key{ID: "k1", Secret: bytes.Repeat([]byte{7}, 32)}
	wrong := fencesign.Key{ID: "k1", Secret: bytes.Repeat([]byte{8}, 32)}
	v, err := fencesign.NewVerifier([]fencesign.Key{key})
	if err != nil {
		t.Fatal(err)
	}
	ft := core.FenceToken{Key: "coupon:7", Fence: 42, Owner: "ab"}
	sign := func(k fencesign.Key, opts ...fencesign.Option) string {
		s, err := fencesign.NewSigner(k, opts...)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := s.Sign(ft)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	good := sign(key)
	huge := core.FenceToken{Key: ft.Key, Fence: 1 << 60, Owner: ft.Owner}
	old := func() time.Time { return time.Now().Add(-time.Hour) }

	var got box[*core.FenceToken]
	e := gin.New()
	e.POST("/reserve", ginmw.AcceptSignedFence(v), func(c *gin.Context) {
		if t, ok := core.FenceFromContext(c.Request.Context()); ok {
			got.set(&t)
		}
	})
	for _, tc := range []struct {
		name   string
		values []string
		status int
		want   *core.FenceToken
	}{
		{"absent", nil, 200, nil},
		{"signed", []string{good}, 200, &ft},
		{"unsigned", []string{ft.String()}, 401, nil},
		{"forged", []string{huge.String() + ";kid=k1;exp=9999999999;sig=" + strings.Repeat("A", 43)}, 401, nil},
		{"tampered", []string{huge.String() + good[strings.Index(good, ";kid="):]}, 401, nil},
		{"replayed after expiry", []string{sign(key, fencesign.WithClock(old))}, 401, nil},
		{"wrong key", []string{sign(wrong)}, 401, nil},
		{"repeated", []string{good, good}, 400, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got.set(nil)
			r := httptest.NewRequest("POST", "/reserve", nil)
			for _, v := range tc.values {
				r.Header.Add(ginmw.FenceHeader, v)
			}
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, r)
			g := got.get()
			if rec.Code != tc.status || (g == nil) != (tc.want == nil) || (g != nil && *g != *tc.want) {
				t.Fatalf("got %d %+v %s; want %d %+v", rec.Code, g, rec.Body, tc.status, tc.want)
			}
		})
	}
}
