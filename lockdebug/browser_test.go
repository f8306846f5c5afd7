package lockdebug_test

import (
	"context"
	"html"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// The page in a real browser: headless chromium loads it, the DOM it built
// holds the held-locks table with our row, and a screenshot is written.
// Without chromium the test skips, so `go test ./...` works on a machine
// with only Go; FENCEDLOCK_REQUIRE_BROWSER=1 (set by .ci/run, which
// installs chromium) makes a missing browser a failure.
func TestPage_inHeadlessChromium(t *testing.T) {
	bin, err := exec.LookPath("chromium")
	if err != nil {
		const msg = "chromium not installed (apt-get install chromium; .ci/run does): the debug page is checked in a real browser"
		if os.Getenv("FENCEDLOCK_REQUIRE_BROWSER") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	f := newFixture(t)
	dir := t.TempDir()
	shot := filepath.Join(dir, "debug.png")
	dom := chromium(t, bin, dir, "--dump-dom", f.srv.URL)
	waitRow := "<td><code>" + html.EscapeString(core.KeysFor(core.DefaultPrefix, "coupon:<42>").Lock) + "</code></td>"
	for _, want := range []string{`<table id="held">`, "<td>coupon:&lt;42&gt;</td>", f.lock.Owner(), "POST /coupons/{id}",
		`<table id="waiting">`, waitRow, `http-equiv="refresh" content="1"`} {
		if !strings.Contains(dom, want) {
			t.Errorf("DOM lacks %q:\n%s", want, dom)
		}
	}
	chromium(t, bin, dir, "--screenshot="+shot, "--window-size=1200,600", f.srv.URL)
	st, err := os.Stat(shot)
	if err != nil || st.Size() < 2000 {
		t.Fatalf("screenshot %s: %v (size %d)", shot, err, sizeOf(st))
	}
	b, _ := os.ReadFile(shot)
	if !strings.HasPrefix(string(b), "\x89PNG") {
		t.Fatal("screenshot is not a PNG")
	}
}

func sizeOf(st os.FileInfo) int64 {
	if st == nil {
		return 0
	}
	return st.Size()
}

func chromium(t *testing.T, bin, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--user-data-dir=" + filepath.Join(dir, "profile")}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	cmd.WaitDelay = 2 * time.Second
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %v: %v", args, err)
	}
	return string(out)
}
