package docscheck

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// block is a fenced code block of a Markdown file.
type block struct {
	file   string // path relative to the module root, slash-separated
	line   int    // 1-based line of the block's first content line
	lang   string // the info string's first word
	marker string // text of a "<!-- docscheck: ... -->" comment just before it
	text   string // content, de-indented by the fence's indentation
}

func (b block) String() string { return b.file + ":" + strconv.Itoa(b.line) }

var (
	fenceRE  = regexp.MustCompile("^(\\s*)(```+|~~~+)\\s*([^`\\s]*)")
	markerRE = regexp.MustCompile(`^\s*<!--\s*docscheck:\s*(.*?)\s*-->\s*$`)
)

// parseMarkdown splits a Markdown text into its fenced code blocks and its
// prose lines (code blocks blanked out, so links inside code are not seen).
func parseMarkdown(file, text string) (blocks []block, prose []string) {
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		m := fenceRE.FindStringSubmatch(lines[i])
		if m == nil {
			prose = append(prose, lines[i])
			continue
		}
		indent, fence := len(m[1]), m[2]
		b := block{file: file, line: i + 2, lang: m[3], marker: markerBefore(lines, i)}
		var body []string
		prose = append(prose, "")
		for i++; i < len(lines); i++ {
			t := strings.TrimSpace(lines[i])
			if strings.HasPrefix(t, fence) && strings.Trim(t, fence[:1]) == "" {
				break
			}
			body = append(body, dedent(lines[i], indent))
			prose = append(prose, "")
		}
		prose = append(prose, "")
		b.text = strings.Join(body, "\n") + "\n"
		blocks = append(blocks, b)
	}
	return blocks, prose
}

func markerBefore(lines []string, i int) string {
	for j := i - 1; j >= 0; j-- {
		if strings.TrimSpace(lines[j]) == "" {
			continue
		}
		if m := markerRE.FindStringSubmatch(lines[j]); m != nil {
			return m[1]
		}
		return ""
	}
	return ""
}

func dedent(s string, n int) string {
	for k := 0; k < n && strings.HasPrefix(s, " "); k++ {
		s = s[1:]
	}
	return s
}

// moduleRoot is the directory holding go.mod, found upwards from the test's
// working directory.
func moduleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("docscheck: no go.mod above the working directory")
		}
		dir = parent
	}
}

// docFiles lists the checked Markdown files, relative to root.
func docFiles(t testing.TB, root string) []string {
	t.Helper()
	files := []string{"README.md", "CONTRIBUTING.md", "CHANGELOG.md"}
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range docs {
		rel, _ := filepath.Rel(root, d)
		files = append(files, filepath.ToSlash(rel))
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("docscheck: %s: %v", f, err)
		}
	}
	return files
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
