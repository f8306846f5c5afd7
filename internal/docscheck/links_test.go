package docscheck

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

var (
	inlineCodeRE = regexp.MustCompile("`[^`]*`")
	linkRE       = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	refDefRE     = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$`)
	headingRE    = regexp.MustCompile(`^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$`)
	anchorRE     = regexp.MustCompile(`<a\s+(?:name|id)="([^"]+)"`)
)

// link is a relative link target found in a Markdown file.
type link struct {
	file, target string
	line         int
}

// relativeLinks returns the links of a Markdown text that point into the
// repository: inline links and images, and reference definitions, outside
// code blocks and code spans. URLs with a scheme are left out.
func relativeLinks(file, text string) []link {
	_, prose := parseMarkdown(file, text)
	var links []link
	for i, l := range prose {
		l = inlineCodeRE.ReplaceAllString(l, "")
		var targets []string
		for _, m := range linkRE.FindAllStringSubmatch(l, -1) {
			targets = append(targets, m[1])
		}
		if m := refDefRE.FindStringSubmatch(l); m != nil {
			targets = append(targets, m[1])
		}
		for _, t := range targets {
			if hasScheme(t) {
				continue
			}
			links = append(links, link{file: file, target: t, line: i + 1})
		}
	}
	return links
}

func hasScheme(t string) bool {
	i := strings.Index(t, ":")
	return i > 0 && !strings.ContainsAny(t[:i], "/#.")
}

// checkLink reports why a link does not resolve under root, or "".
// Anchors into Markdown files must name a heading (GitHub's slugs) or an
// <a name> of the target.
func checkLink(root string, l link) string {
	target, anchor, _ := strings.Cut(l.target, "#")
	file := l.file
	if target != "" {
		file = path.Clean(path.Join(path.Dir(l.file), target))
		if file == ".." || strings.HasPrefix(file, "../") {
			return fmt.Sprintf("%s leaves the repository", l.target)
		}
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(file))); err != nil {
			return fmt.Sprintf("%s: no such file or directory in the repository", l.target)
		}
	}
	if anchor == "" || !strings.HasSuffix(file, ".md") {
		return ""
	}
	text, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(file)))
	if err != nil {
		return err.Error()
	}
	if !anchors(string(text))[anchor] {
		return fmt.Sprintf("%s: %s has no heading with anchor #%s", l.target, file, anchor)
	}
	return ""
}

// anchors returns the anchors GitHub gives a Markdown file's headings.
func anchors(text string) map[string]bool {
	_, prose := parseMarkdown("", text)
	seen := map[string]int{}
	out := map[string]bool{}
	for _, l := range prose {
		for _, m := range anchorRE.FindAllStringSubmatch(l, -1) {
			out[m[1]] = true
		}
		m := headingRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		s := slug(m[2])
		if n := seen[s]; n > 0 {
			out[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

// slug is GitHub's heading anchor: lower case, punctuation dropped, spaces
// turned into hyphens.
func slug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestLinks_resolve(t *testing.T) {
	root := moduleRoot(t)
	n := 0
	for _, f := range docFiles(t, root) {
		for _, l := range relativeLinks(f, readFile(t, filepath.Join(root, f))) {
			n++
			if why := checkLink(root, l); why != "" {
				t.Errorf("%s:%d: broken link: %s", l.file, l.line, why)
			}
		}
	}
	if n == 0 {
		t.Error("docscheck: no relative links found; is the parser broken?")
	}
}

// The negative control: links that do not resolve are reported.
func TestLinks_brokenAreReported(t *testing.T) {
	root := moduleRoot(t)
	md := "See [the guide](docs/no-such-page.md), [up](../../outside.md),\n" +
		"[a heading](README.md#no-such-heading), [fine](README.md) and\n" +
		"`[code](not/a/link.md)` and <https://example.com>.\n\n" +
		"```sh\n[also code](nope.md)\n```\n\n[ref]: CONTRIBUTING.md#nothing-here\n"
	var broken []string
	for _, l := range relativeLinks("README.md", md) {
		if checkLink(root, l) != "" {
			broken = append(broken, l.target)
		}
	}
	want := []string{"docs/no-such-page.md", "../../outside.md", "README.md#no-such-heading", "CONTRIBUTING.md#nothing-here"}
	if strings.Join(broken, " ") != strings.Join(want, " ") {
		t.Errorf("broken links reported: %q, want %q", broken, want)
	}
}

func TestSlug(t *testing.T) {
	for in, want := range map[string]string{
		"Guarantees and failure modes": "guarantees-and-failure-modes",
		"gRPC: `grpcmw`":               "grpc-grpcmw",
		"Lock → fence → WHERE clause":  "lock--fence--where-clause",
		"Redis or etcd?":               "redis-or-etcd",
	} {
		if got := slug(in); got != want {
			t.Errorf("slug(%q) = %q, want %q", in, got, want)
		}
	}
}
