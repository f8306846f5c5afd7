package docscheck

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// funcBody returns the statements of the named function in Go source, as
// text: without the braces, the "// Output:" comment and what follows it,
// de-indented, trailing spaces trimmed.
func funcBody(src, name string) (string, error) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "", src, parser.ParseComments)
	if err != nil {
		return "", err
	}
	for _, d := range f.Decls {
		fn, ok := d.(*ast.FuncDecl)
		if !ok || fn.Recv != nil || fn.Name.Name != name || fn.Body == nil {
			continue
		}
		start := fset.Position(fn.Body.Lbrace).Offset + 1
		end := fset.Position(fn.Body.Rbrace).Offset
		for _, cg := range f.Comments {
			off := fset.Position(cg.Pos()).Offset
			if off > start && off < end && strings.HasPrefix(cg.Text(), "Output:") {
				end = off
			}
		}
		return normalize(src[start:end]), nil
	}
	return "", fmt.Errorf("no func %s", name)
}

// normalize removes the common leading tabs and spaces of the non-blank
// lines, trailing spaces, and blank lines at both ends.
func normalize(s string) string {
	lines := strings.Split(s, "\n")
	common := -1
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " \t")
		if lines[i] == "" {
			continue
		}
		n := len(lines[i]) - len(strings.TrimLeft(lines[i], " \t"))
		if common < 0 || n < common {
			common = n
		}
	}
	for i, l := range lines {
		if len(l) >= common && common > 0 {
			lines[i] = l[common:]
		}
	}
	return strings.Trim(strings.Join(lines, "\n"), "\n")
}

// exampleRef parses an "example FILE FUNC" marker.
func exampleRef(marker string) (file, fn string, ok bool) {
	f := strings.Fields(marker)
	if len(f) != 3 || f[0] != "example" {
		return "", "", false
	}
	return f[1], f[2], true
}

// checkExampleBlock reports how a block marked "example FILE FUNC" differs
// from FUNC in exampleSrc, the source of FILE, or "".
func checkExampleBlock(b block, exampleSrc string) string {
	_, fn, _ := exampleRef(b.marker)
	want, err := funcBody(exampleSrc, fn)
	if err != nil {
		return err.Error()
	}
	got, err := funcBody(b.text, "main")
	if err != nil {
		return "the block must be a whole program with func main: " + err.Error()
	}
	if got == want {
		return ""
	}
	return fmt.Sprintf("main's body differs from %s; first difference at line %d of the body:\n got: %q\nwant: %q\n(update the block to the Example's body)",
		fn, diffLine(got, want)+1, lineAt(got, diffLine(got, want)), lineAt(want, diffLine(got, want)))
}

func diffLine(a, b string) int {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return i
		}
	}
	return min(len(al), len(bl))
}

func lineAt(s string, i int) string {
	l := strings.Split(s, "\n")
	if i < len(l) {
		return l[i]
	}
	return "(end)"
}

func TestExamples_matchBlocks(t *testing.T) {
	root := moduleRoot(t)
	quickStart := false
	for _, f := range docFiles(t, root) {
		blocks, _ := parseMarkdown(f, readFile(t, filepath.Join(root, f)))
		for _, b := range blocks {
			file, fn, ok := exampleRef(b.marker)
			if !ok {
				continue
			}
			if f == "README.md" && file == "core/example_test.go" && fn == "Example" {
				quickStart = true
			}
			src := readFile(t, filepath.Join(root, filepath.FromSlash(file)))
			if why := checkExampleBlock(b, src); why != "" {
				t.Errorf("%s: %s", b, why)
			}
		}
	}
	if !quickStart {
		t.Error("README.md: no block marked <!-- docscheck: example core/example_test.go Example --> (the quick start)")
	}
}

// The negative control: a quick start that drifted from the Example is
// reported.
func TestExamples_driftIsReported(t *testing.T) {
	root := moduleRoot(t)
	src := readFile(t, filepath.Join(root, "core", "example_test.go"))
	body, err := funcBody(src, "Example")
	if err != nil {
		t.Fatal(err)
	}
	program := func(body string) block {
		text := "package main\n\nfunc main() {\n\t" + strings.ReplaceAll(body, "\n", "\n\t") + "\n}\n"
		return block{file: "README.md", line: 1, marker: "example core/example_test.go Example", text: text}
	}
	if why := checkExampleBlock(program(body), src); why != "" {
		t.Fatalf("the Example's own body is reported: %s", why)
	}
	drifted := strings.Replace(body, "\n", "\n// a comment the Example does not have\n", 1)
	if why := checkExampleBlock(program(drifted), src); !strings.Contains(why, "a comment the Example does not have") {
		t.Errorf("a drifted quick start is not reported (got %q)", why)
	}
}
